"""Function search across optimisation levels (binary code similarity), the jTrans protocol.

For a pair of compilation settings (``O0`` vs ``O3``, or gcc vs clang at one
level), every source function present at both is a pair: a *query* at one
setting and its *partner* at the other. Pairs are shuffled with a fixed seed
and cut into pools of ``P``; within a pool each query ranks the ``P``
candidates by cosine similarity, and the rank of its partner gives MRR (mean of
1/rank) and Recall@1 (share ranked first). Functions shorter than
``min_instructions`` at either setting are left out (tiny stubs are identical
everywhere and make the task look easier than it is).

The systems compared on the same pools: the run's encoder (a fine-tuned run's
with its projection head), the pretrained encoder it was fine-tuned from
(zero-shot, for a ``task=similarity`` run), the same architecture untrained,
TF-IDF over instruction n-grams, and ``model+tf-idf``: the encoder's and
TF-IDF's cosines averaged (:func:`hybrid_vectors`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from functools import partial
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from undertale.runtime.errors import UsageError, first_line, report_usage_error
from undertale.metrics.retrieval import hybrid_vectors, pools, search_scores
from undertale.metrics.tfidf import TfIdf
from undertale.settings.pairs import ARCHITECTURES, architecture_name

DEFAULT_POOLS = (32, 1000)
DEFAULT_MIN_INSTRUCTIONS = 5
HYBRID = "model+tf-idf"


@dataclass(frozen=True)
class Setting:
    """One side of a comparison: a compiler (building for ``architecture``) at an optimisation level."""

    compiler: str
    level: str
    architecture: str = "x86-64"

    def __str__(self) -> str:
        return f"{self.compiler} -{self.level}"


@dataclass
class PairSet:
    """Functions present at both settings: ``queries[i]`` and ``partners[i]`` are one source function."""

    left: Setting
    right: Setting
    groups: list[str]
    queries: list[str]
    partners: list[str]

    @property
    def name(self) -> str:
        left, right = self.left, self.right
        if left.compiler == right.compiler:
            return f"{left.level}-{right.level} ({left.compiler})"
        if left.architecture != right.architecture:
            if left.level == right.level:
                return f"{architecture_name(left.architecture)}/{architecture_name(right.architecture)} -{left.level}"
            return f"{architecture_name(left.architecture)} -{left.level}/{architecture_name(right.architecture)} -{right.level}"
        return f"{left.compiler}-{right.compiler} (-{left.level})"


def pair_sets(rows: Sequence[dict], comparisons: Sequence[tuple[Setting, Setting]],
              min_instructions: int = DEFAULT_MIN_INSTRUCTIONS) -> list[PairSet]:
    """The pairs of each comparison, from rows with ``group``, ``compiler``, ``level``, ``instructions``, ``disassembly``."""
    by_setting: dict[Setting, dict[str, dict]] = {}
    for row in rows:
        by_setting.setdefault(setting_of(row), {})[row["group"]] = row
    sets = []
    for left, right in comparisons:
        a, b = by_setting.get(left, {}), by_setting.get(right, {})
        groups = sorted(group for group in a.keys() & b.keys()
                        if min(a[group]["instructions"], b[group]["instructions"]) >= min_instructions)
        sets.append(PairSet(left, right, groups, [a[g]["disassembly"] for g in groups],
                            [b[g]["disassembly"] for g in groups]))
    return sets


def setting_of(row: dict) -> Setting:
    return Setting(row["compiler"], row["level"], row.get("architecture") or "x86-64")


def default_comparisons(rows: Sequence[dict]) -> list[tuple[Setting, Setting]]:
    """O0, O1, O2 against O3 for each compiler; and across compilers at each level when two are present.

    With several instruction sets (a build with ``--targets``): those of the reference architecture's compiler
    (x86-64 when present), then for every other architecture the reference against it at each level, and
    reference -O0 against it at -O3 (the hardest pairing).
    """
    settings = {setting_of(row) for row in rows}
    if len({setting.architecture for setting in settings}) > 1:
        return cross_architecture_comparisons(settings)
    compilers = sorted({setting.compiler for setting in settings})
    levels = sorted({setting.level for setting in settings})
    comparisons = []
    for compiler in compilers:
        own = sorted(setting.level for setting in settings if setting.compiler == compiler)
        top = "O3" if "O3" in own else own[-1]
        for level in levels:
            if level != top and Setting(compiler, level) in settings:
                comparisons.append((Setting(compiler, level), Setting(compiler, top)))
    if len(compilers) > 1:
        first, second = compilers[:2]
        for level in levels:
            if Setting(first, level) in settings and Setting(second, level) in settings:
                comparisons.append((Setting(first, level), Setting(second, level)))
    return comparisons


def cross_architecture_comparisons(settings: set[Setting]) -> list[tuple[Setting, Setting]]:
    """See :func:`default_comparisons`: one compiler per architecture (the first by name)."""
    compilers: dict[str, str] = {}
    for setting in sorted(settings, key=lambda item: item.compiler):
        compilers.setdefault(setting.architecture, setting.compiler)
    architectures = sorted(compilers, key=lambda name: (name != "x86-64", name))
    levels = sorted({setting.level for setting in settings})
    present = {(setting.architecture, setting.level): setting for setting in settings
               if compilers[setting.architecture] == setting.compiler}
    reference = architectures[0]
    top = "O3" if (reference, "O3") in present else levels[-1]
    comparisons = [(present[reference, level], present[reference, top]) for level in levels
                   if level != top and (reference, level) in present and (reference, top) in present]
    for other in architectures[1:]:
        comparisons += [(present[reference, level], present[other, level]) for level in levels
                        if (reference, level) in present and (other, level) in present]
        if (reference, "O0") in present and (other, "O3") in present:
            comparisons.append((present[reference, "O0"], present[other, "O3"]))
    return comparisons


def parse_comparison(text: str, settings: set[Setting]) -> tuple[Setting, Setting]:
    """``x86-64:O0/aarch64:O3`` (or ``gcc:O0/clang:O0``, or ``O0/O3`` with one compiler) as two settings.

    Raises:
        UsageError: naming the side that matches no setting of the split, and those that it has.
    """
    sides = text.split("/")
    if len(sides) != 2:
        raise UsageError(f"comparison {text!r}: expected QUERY/PARTNER, e.g. x86-64:O0/aarch64:O3")
    return _side(sides[0], text, settings), _side(sides[1], text, settings)


def _side(side: str, text: str, settings: set[Setting]) -> Setting:
    who, _, level = side.strip().rpartition(":")
    level = level.strip().lstrip("-")
    names = {who.strip()} if who else set()
    if who.strip().lower() in ARCHITECTURES:
        names.add(ARCHITECTURES[who.strip().lower()])
    matches = sorted((setting for setting in settings if setting.level == level
                      and (not names or setting.compiler in names or setting.architecture in names)),
                     key=lambda setting: setting.compiler)
    if not matches:
        known = ", ".join(sorted(f"{architecture_name(setting.architecture)}:{setting.level} ({setting.compiler})"
                                 for setting in settings))
        raise UsageError(f"comparison {text!r}: no functions at {side!r}; the split has {known}")
    return matches[0]


@dataclass(frozen=True)
class Hybrid:
    """A benchmark system whose vectors join two earlier systems' vectors with :func:`hybrid_vectors`."""

    dense: str
    sparse: str


def evaluate_system(vectors: Any, index: dict[str, int], pair_set: PairSet, pool_sizes: Sequence[int],
                    seed: int) -> dict:
    """Scores of one system on one comparison, for each pool size, from the system's ``vectors`` of every text."""
    if not pair_set.groups:
        return {str(size): search_scores(np.zeros((0, 1)), np.zeros((0, 1)), []) for size in pool_sizes}
    queries = vectors[[index[text] for text in pair_set.queries]]
    candidates = vectors[[index[text] for text in pair_set.partners]]
    return {str(size): search_scores(queries, candidates, pools(len(pair_set.groups), size, seed))
            for size in pool_sizes}


def benchmark(rows: Sequence[dict], systems: dict[str, Callable[[Sequence[str]], Any] | Hybrid],
              pool_sizes: Sequence[int] = DEFAULT_POOLS, seed: int = 0,
              min_instructions: int = DEFAULT_MIN_INSTRUCTIONS,
              comparisons: Optional[Sequence[tuple[Setting, Setting]]] = None, progress: bool = False) -> dict:
    """MRR and Recall@1 of every system on every comparison and pool size.

    Each system embeds every distinct function text once (a text shared by several comparisons, or
    identical at two levels, is not embedded again); ``progress`` prints each system's count and time.
    A :class:`Hybrid` system joins the vectors of two systems listed before it, without embedding again.

    Returns:
        ``{"comparisons": {name: {"pairs": n, "systems": {system: {pool: scores}}}}, ...}``.
    """
    sets = pair_sets(rows, comparisons or default_comparisons(rows), min_instructions)
    texts = sorted({text for pair_set in sets for text in (*pair_set.queries, *pair_set.partners)})
    index = {text: position for position, text in enumerate(texts)}
    results = {pair_set.name: {
        "pairs": len(pair_set.groups),
        "identical": sum(query == partner for query, partner in zip(pair_set.queries, pair_set.partners)),
        "systems": {},
    } for pair_set in sets}
    joined = {part for embed in systems.values() if isinstance(embed, Hybrid) for part in (embed.dense, embed.sparse)}
    kept: dict[str, Any] = {}  # the vectors a hybrid joins later
    for name, embed in systems.items():
        started = time.perf_counter()
        if isinstance(embed, Hybrid):
            missing = [part for part in (embed.dense, embed.sparse) if part not in kept]
            if missing:
                raise ValueError(f"system {name!r} joins {', '.join(missing)}: list it after the systems it joins")
            vectors = hybrid_vectors(kept[embed.dense], kept[embed.sparse]) if texts else np.zeros((0, 1))
            done = f"{embed.dense} and {embed.sparse} joined"
        else:
            vectors = embed(texts) if texts else np.zeros((0, 1))
            done = f"{len(texts):,} distinct functions embedded"
        if name in joined:
            kept[name] = vectors
        if progress:
            print(f"{name}: {done} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        for pair_set in sets:
            results[pair_set.name]["systems"][name] = evaluate_system(vectors, index, pair_set, pool_sizes, seed)
    return {"comparisons": results, "pool_sizes": list(pool_sizes), "seed": seed, "min_instructions": min_instructions}


def table(results: dict) -> str:
    """The results as a text table: one row per comparison and system, MRR and Recall@1 per pool size."""
    sizes = [str(size) for size in results["pool_sizes"]]
    header = f"{'comparison':<24}{'pairs':>7}{'same':>6}  {'system':<12}" + "".join(
        f"{'MRR@' + size:>10}{'R@1@' + size:>10}" for size in sizes)
    lines = [header, "-" * len(header)]
    for name, comparison in results["comparisons"].items():
        for system, scores in comparison["systems"].items():
            cells = ""
            for size in sizes:
                score = scores[size]
                pool = score.get("pool_size")
                shown = "-" if score["mrr"] is None else f"{score['mrr']:.3f}"
                recall = "-" if score["recall@1"] is None else f"{score['recall@1']:.3f}"
                if pool is not None and pool < int(size):
                    shown += "*"
                cells += f"{shown:>10}{recall:>10}"
            same = comparison.get("identical")
            same = "-" if same is None or not comparison["pairs"] else f"{100 * same / comparison['pairs']:.0f}%"
            lines.append(f"{name:<24}{comparison['pairs']:>7}{same:>6}  {system:<12}{cells}")
    if any(score.get("pool_size", int(size)) < int(size) for comparison in results["comparisons"].values()
           for scores in comparison["systems"].values() for size, score in scores.items()):
        lines.append("* fewer pairs than the pool size: one pool of all pairs")
    lines.append("same: pairs whose two functions have the same text (every system ranks those by exact match)")
    if any(HYBRID in comparison["systems"] for comparison in results["comparisons"].values()):
        lines.append(f"{HYBRID}: the mean of the model's and TF-IDF's cosines")
    if results.get("windows"):
        lines.append(f"encoders' vectors: windows={results['windows']}")
    return "\n".join(lines)


def main(cfg) -> int:
    """``python evaluate.py task=similarity run=<run dir> pairs=<pairs dir>``: table, ``similarity.json``, W&B.

    Returns:
        The exit code: 0, or 2 after one ``error:`` line for a mistake (a :class:`UsageError`).
    """
    try:
        return _evaluate(cfg)
    except UsageError as error:
        return report_usage_error(error)


def _evaluate(cfg) -> int:
    from undertale.data.pairs.build import read_pairs
    from undertale.inference.embedding import DEFAULT_WINDOWS, FunctionEncoder
    from undertale.runtime.runs import RunDirectory

    run_value, pairs_value = cfg.get("run"), cfg.get("pairs")
    if not run_value:
        raise UsageError("run=<run directory> is required")
    if not pairs_value:
        raise UsageError("pairs=<pairs directory> is required (build one with `python -m undertale.data pairs`)")
    run = RunDirectory(run_value)
    split = cfg.get("split") or "test"
    try:
        encoder_settings = {"pooling": cfg.get("pooling"), "windows": cfg.get("windows") or DEFAULT_WINDOWS}
        model = FunctionEncoder.from_run(run.path, **encoder_settings)
        untrained = FunctionEncoder.from_run(run.path, untrained=True, seed=int(cfg.get("seed") or 0),
                                             **encoder_settings)
        rows = read_pairs(pairs_value, split).to_pylist()
    except UsageError:
        raise
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(first_line(error)) from None
    if not rows:
        raise UsageError(f"no functions in the {split} split of {pairs_value}")
    rows = _of_projects(rows, cfg.get("projects"), split)
    comparisons = [parse_comparison(str(text), {setting_of(row) for row in rows})
                   for text in cfg.get("comparisons") or ()] or None
    tfidf = TfIdf([row["disassembly"] for row in rows])
    systems = {"model": partial(model.embed, progress=True)}
    pretrained = _pretrained_of(run)
    if pretrained is not None:  # a fine-tuned run: its pretrained encoder, zero-shot
        zero_shot = FunctionEncoder.from_run(pretrained, **encoder_settings)
        systems["pretrained"] = partial(zero_shot.embed, progress=True)
    systems |= {"untrained": partial(untrained.embed, progress=True), "tf-idf": tfidf.vectors,
                HYBRID: Hybrid("model", "tf-idf")}
    pool_sizes = [int(size) for size in (cfg.get("pools") or DEFAULT_POOLS)]
    min_instructions = int(cfg.get("min_instructions") or DEFAULT_MIN_INSTRUCTIONS)
    started = time.perf_counter()
    results = benchmark(rows, systems, pool_sizes, int(cfg.get("seed") or 0), min_instructions, comparisons,
                        progress=True)
    results |= {"run": str(run.path), "pairs": str(pairs_value), "split": split, "windows": model.which_windows,
                "projects": sorted({row["project"] for row in rows}),
                "seconds": round(time.perf_counter() - started, 1)}
    print(table(results))
    run.similarity.write_text(json.dumps(results, indent=2))
    print(f"\nsimilarity: {run.similarity}")
    _log(run, results, cfg)
    return 0


def _of_projects(rows: list[dict], projects, split: str) -> list[dict]:
    """The rows of the named projects (``projects=[a,b]``; None: every row)."""
    if not projects:
        return rows
    names = [projects] if isinstance(projects, str) else [str(name) for name in projects]
    present = {row["project"] for row in rows}
    unknown = [name for name in names if name not in present]
    if unknown:
        raise UsageError(f"projects: {unknown[0]} is not a project of the {split} split; it has "
                         f"{', '.join(sorted(present))}")
    return [row for row in rows if row["project"] in names]


def _pretrained_of(run) -> Optional[str]:
    """The pretraining run a fine-tuned run started from, when it still exists."""
    from omegaconf import OmegaConf

    if not run.config.is_file():
        return None
    pretrained = OmegaConf.load(run.config).get("pretrained")
    if pretrained and (Path(pretrained).expanduser() / "tokenizer.json").is_file():
        return str(pretrained)
    if pretrained:
        print(f"note: the pretrained run {pretrained} is gone; its zero-shot row is left out", file=sys.stderr)
    return None


def metric_key(comparison: str) -> str:
    """A comparison's name as a logger key, without spaces or parentheses: ``O0-O3 (gcc)`` -> ``O0-O3_gcc``."""
    return re.sub(r"[^\w.@-]+", "_", comparison).strip("_")


def _log(run, results: dict, cfg) -> None:
    """MRR and Recall@1 of every comparison, system and pool as a run in the training run's group."""
    from undertale.evaluation.runlog import log_evaluation

    metrics = {
        f"similarity/{metric_key(name)}/{system}/{metric}@{size}": score[metric]
        for name, comparison in results["comparisons"].items()
        for system, scores in comparison["systems"].items()
        for size, score in scores.items()
        for metric in ("mrr", "recall@1") if score[metric] is not None
    }
    config = {key: results[key] for key in ("run", "pairs", "split", "projects", "pool_sizes", "seed", "min_instructions")}
    log_evaluation(cfg, run, "similarity", "similarity", f"similarity {results['split']}", config, metrics, step=0)

