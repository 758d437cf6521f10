"""``data=pairs``: the pairs settings of ``task=similarity``, checked against a dataset and loaded.

``data=pairs`` (chosen by ``task=similarity``) instantiates :class:`PairsDataConfig`;
:meth:`PairsDataConfig.datamodule` loads the pairs with a tokenizer. The settings and their checks are
:class:`~undertale.settings.pairs.PairsDataSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from undertale.data.pairs.build import load_pairs_manifest, read_pairs
from undertale.data.pairs.dataset import PairsDataModule
from undertale.settings.pairs import PairsDataSettings, architecture_name


def built_architectures(manifest: dict, directory: Path) -> list[str]:
    """The instruction sets of a pairs build (its manifest's, else read from its rows: older builds)."""
    recorded = manifest.get("architectures")
    if recorded is not None:
        return sorted({name for names in recorded.values() for name in names})
    names = set()
    for split in ("train", "validation", "test"):
        names |= set(pc.unique(read_pairs(directory, split, columns=["architecture"])["architecture"]).to_pylist())
    return sorted(names)


@dataclass(frozen=True)
class PairsDataConfig(PairsDataSettings):
    """:class:`~undertale.settings.pairs.PairsDataSettings` that check and load their pairs dataset."""

    def check_pairs(self) -> None:
        """Raises ValueError when ``pairs`` holds no complete pairs build (cheap: reads the manifest)."""
        if not Path(self.pairs).expanduser().is_dir():
            raise ValueError(f"data.pairs={self.pairs} is not a directory (build one with python -m undertale.data pairs)")
        manifest = load_pairs_manifest(Path(self.pairs).expanduser())
        if manifest is None:
            raise ValueError(f"data.pairs={self.pairs} holds no complete pairs dataset (manifest.json missing or shards "
                             "gone); build it with python -m undertale.data pairs")
        missing = [level for level in {*self.levels, *self.validation_levels} if level not in manifest["levels"]]
        if missing:
            raise ValueError(f"data.pairs={self.pairs} was built at {', '.join(manifest['levels'])}, not at "
                             f"{', '.join(sorted(missing))}; set data.levels and data.validation_levels to built levels")
        unknown = [name for name in self.compilers or () if name not in manifest["compilers"]]
        if unknown:
            raise ValueError(f"data.compilers holds {unknown[0]!r}; data.pairs={self.pairs} was built with "
                             f"{', '.join(manifest['compilers'])}")
        built = built_architectures(manifest, Path(self.pairs).expanduser())
        unknown = [name for name in {*(self.architectures or ()), *(self.validation_architectures or ())}
                   if name not in built]
        if unknown:
            raise ValueError(f"data.pairs={self.pairs} holds no {architecture_name(sorted(unknown)[0])} functions; it holds "
                             f"{', '.join(architecture_name(name) for name in built)}")
        compilers = len(self.compilers or manifest["compilers"])
        kinds = len(self.levels) * compilers
        if self.variants_per_group > kinds:
            raise ValueError(f"data.variants_per_group={self.variants_per_group}, but a group has at most {kinds} "
                             f"variants ({len(self.levels)} level(s) x {compilers} compiler(s)); set it to {kinds} or less")
        groups = self.training_groups()
        if groups < self.batch_size:
            raise ValueError(f"data.batch_size={self.batch_size} groups, but the train split of data.pairs={self.pairs} "
                             f"has {groups} groups with two variants at {', '.join(self.levels)}; lower data.batch_size")

    def training_groups(self) -> int:
        """Groups of the train split with at least two variants at ``levels`` (functions of ``min_instructions``)."""
        table = read_pairs(Path(self.pairs).expanduser(), "train",
                           columns=["group", "level", "compiler", "architecture", "instructions"])
        keep = pc.and_(pc.is_in(table["level"], pa.array(list(self.levels))),
                       pc.greater_equal(table["instructions"], self.min_instructions))
        if self.compilers:
            keep = pc.and_(keep, pc.is_in(table["compiler"], pa.array(list(self.compilers))))
        if self.architectures:
            keep = pc.and_(keep, pc.is_in(table["architecture"], pa.array(list(self.architectures))))
        counts = table.filter(keep).group_by("group").aggregate([("level", "count")])
        return int(pc.sum(pc.greater_equal(counts["level_count"], 2)).as_py() or 0)

    def datamodule(self, tokenizer: str | Path, sequence_length: int) -> PairsDataModule:
        """Train and validation loaders over the pairs, tokenized with ``tokenizer``."""
        return PairsDataModule(
            str(Path(self.pairs).expanduser()), str(tokenizer), sequence_length, groups_per_batch=self.batch_size,
            levels=self.levels, validation_levels=self.validation_levels, compilers=self.compilers,
            min_instructions=self.min_instructions, max_tokens=self.max_tokens, packing=self.packing,
            num_workers=self.num_workers, seed=self.seed, pin_memory=self.pin_memory,
            neighbour_batches=float(self.neighbour_batches), variants_per_group=self.variants_per_group,
            architectures=self.architectures, validation_architectures=self.validation_architectures,
        )
