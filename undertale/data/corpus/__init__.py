"""The corpus pipeline: ELF files to parquet shards of instruction-trace functions.

:mod:`~undertale.data.corpus.elf` (find functions), :mod:`~undertale.data.corpus.disassembly` (decode and
normalise), :mod:`~undertale.data.corpus.build` (the parallel build, manifest and fingerprint),
:mod:`~undertale.data.corpus.distributed` (the same build on Dask), :mod:`~undertale.data.corpus.benchmark`
(its speed beside ``objdump``), :mod:`~undertale.data.corpus.limits` (what one input file may cost) and
:mod:`~undertale.data.corpus.supervise` (the process pool whose workers are watched).
"""
