"""Function search over binaries: an index of function vectors, queries and whole-binary diffs.

- :mod:`undertale.search.store`: the index on disk (``index.json``, ``vectors.npy``, ``functions.parquet``)
  and the identity of the model that wrote it.
- :mod:`undertale.search.index`: ``index.py``, embedding every function of some ELF files into an index.
- :mod:`undertale.search.query`: exact (blocked, memory-mapped) and FAISS top-k search; ``search.py query=``.
- :mod:`undertale.search.diff`: one-to-one matching of two binaries' functions; ``search.py diff=``.
- :mod:`undertale.search.command`: ``search.py``.

It sits at the evaluation layer of ``docs/design.md`` because ``scoring=model+tf-idf`` reuses
:func:`undertale.metrics.retrieval.hybrid_vectors`.
"""
