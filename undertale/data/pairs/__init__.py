"""The pairs pipeline: C sources compiled at several optimisation levels into groups of the same function.

:mod:`~undertale.data.pairs.discover` (projects, compilers, levels, the split by project),
:mod:`~undertale.data.pairs.compile` (each file at each level, read as the corpus reads it),
:mod:`~undertale.data.pairs.build` (deduplicate, group, write and read the dataset),
:mod:`~undertale.data.pairs.stage` and :mod:`~undertale.data.pairs.sources` (pinned Debian source packages staged
from a dataset description),
:mod:`~undertale.data.pairs.dataset` (batches for contrastive fine-tuning) and
:mod:`~undertale.data.pairs.config` (``data=pairs``).
"""
