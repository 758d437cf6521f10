"""The pairs pipeline: C sources compiled at several optimisation levels into groups of the same function.

:mod:`~undertale.data.pairs.build` (discover projects and compilers, compile, build the dataset),
:mod:`~undertale.data.pairs.dataset` (batches for contrastive fine-tuning) and
:mod:`~undertale.data.pairs.config` (``data=pairs``).
"""
