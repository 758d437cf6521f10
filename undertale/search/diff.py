"""Match the functions of two binaries one-to-one: matched, changed and unmatched functions.

The score of a pair is the cosine of their vectors (or evaluate.py's ``model+tf-idf``). Pairs are chosen to
maximise the total score (``matching=hungarian``, :func:`scipy.optimize.linear_sum_assignment`) or best first
(``matching=greedy``); a pair scoring below ``threshold`` is not a match. Ties (identical code at several
addresses) are broken towards the same name, then the same address. A match is *changed* when its names
differ or its score is below ``identical``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from undertale.runtime.errors import UsageError

MATCHINGS = ("hungarian", "greedy")
TIE_NAME = 1e-4  # a tie-breaker far below any real difference between scores (vectors are float32)
TIE_ADDRESS = 1e-5


def tie_breaks(left: list[dict], right: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, bonus) of the pairs with the same name or address: a sparse tie-breaker."""
    rows, columns, bonus = [], [], []
    for key, weight in (("name", TIE_NAME), ("address", TIE_ADDRESS)):
        where: dict = {}
        for j, row in enumerate(right):
            where.setdefault(row[key], []).append(j)
        for i, row in enumerate(left):
            for j in where.get(row[key], ()):
                rows.append(i)
                columns.append(j)
                bonus.append(weight)
    return np.array(rows, dtype=np.int64), np.array(columns, dtype=np.int64), np.array(bonus, dtype=np.float32)


def match(scores: np.ndarray, threshold: float, matching: str = "hungarian",
          ties: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of a score matrix, each scoring at least ``threshold``."""
    if matching not in MATCHINGS:
        raise UsageError(f"matching must be one of {', '.join(MATCHINGS)}, got {matching!r}")
    if not scores.size:
        return []
    weights = scores.astype(np.float32, copy=True)
    if ties is not None and len(ties[0]):
        np.add.at(weights, (ties[0], ties[1]), ties[2])
    if matching == "hungarian":
        from scipy.optimize import linear_sum_assignment

        # pairs below the threshold never count: clipped to the threshold they add nothing over leaving both out
        rows, columns = linear_sum_assignment(np.maximum(weights, threshold - 1e-3), maximize=True)
        return [(int(i), int(j)) for i, j in zip(rows, columns) if scores[i, j] >= threshold]
    candidates = np.argwhere(scores >= threshold)
    order = np.argsort(-weights[candidates[:, 0], candidates[:, 1]], kind="stable")
    used_left, used_right, pairs = set(), set(), []
    for i, j in candidates[order].tolist():
        if i not in used_left and j not in used_right:
            used_left.add(i)
            used_right.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def diff(index, left_spec: str, right_spec: str, threshold: float = 0.8, identical: float = 0.999,
         scoring: str = "model", matching: str = "hungarian") -> dict:
    """The one-to-one matching of two binaries' functions (each in the index, or a file embedded on the fly)."""
    from undertale.search.query import HYBRID, SCORINGS, functions_of

    if scoring not in SCORINGS:
        raise UsageError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if not 0 <= identical <= 1 or not -1 <= threshold <= 1:
        raise UsageError(f"threshold ({threshold}) and identical ({identical}) are cosines: at most 1")
    cache: dict = {}
    left, right = functions_of(index, left_spec, cache), functions_of(index, right_spec, cache)
    started = time.perf_counter()
    if scoring == HYBRID:
        scores = _hybrid(left, right)
    else:
        scores = np.asarray(left.vectors, dtype=np.float32) @ np.asarray(right.vectors, dtype=np.float32).T
    pairs = match(scores, threshold, matching, tie_breaks(left.rows, right.rows))
    seconds = time.perf_counter() - started
    return report(left, right, scores, pairs, threshold, identical, scoring, matching, seconds)


def _hybrid(left, right) -> np.ndarray:
    """Hybrid scores of left x right, TF-IDF fitted on both binaries' functions."""
    from undertale.metrics.retrieval import hybrid_vectors
    from undertale.metrics.tfidf import TfIdf

    tfidf = TfIdf(left.texts + right.texts)
    a = hybrid_vectors(np.asarray(left.vectors), tfidf.vectors(left.texts))
    b = hybrid_vectors(np.asarray(right.vectors), tfidf.vectors(right.texts))
    return np.asarray((a @ b.T).todense(), dtype=np.float32)


def report(left, right, scores, pairs, threshold, identical, scoring, matching, seconds) -> dict:
    def describe(row: dict) -> dict:
        return {"name": row["name"], "address": row["address"], "size": row["size"]}

    matched, changed = [], []
    for i, j in pairs:
        entry = {"a": describe(left.rows[i]), "b": describe(right.rows[j]), "score": round(float(scores[i, j]), 6)}
        reasons = []
        if left.rows[i]["name"] != right.rows[j]["name"]:
            reasons.append("name")
        if scores[i, j] < identical:
            reasons.append("score")
        if reasons:
            entry["changed"] = reasons
            changed.append(entry)
        matched.append(entry)
    used_left = {i for i, _ in pairs}
    used_right = {j for _, j in pairs}
    return {
        "a": left.binary, "b": right.binary, "functions_a": len(left.rows), "functions_b": len(right.rows),
        "scoring": scoring, "matching": matching, "threshold": threshold, "identical": identical,
        "seconds": round(seconds, 3),
        "summary": {"matched": len(matched), "changed": len(changed), "unmatched_a": len(left.rows) - len(used_left),
                    "unmatched_b": len(right.rows) - len(used_right)},
        "matched": matched, "changed": changed,
        "unmatched_a": [describe(row) for i, row in enumerate(left.rows) if i not in used_left],
        "unmatched_b": [describe(row) for j, row in enumerate(right.rows) if j not in used_right],
    }


def diff_table(result: dict, limit: int = 50) -> str:
    """The summary, then up to ``limit`` changed and unmatched functions of each side."""
    a, b = os.path.basename(result["a"]), os.path.basename(result["b"])
    summary = result["summary"]
    lines = [f"diff {result['a']} ({result['functions_a']:,} functions) vs {result['b']} "
             f"({result['functions_b']:,} functions)",
             f"matched {summary['matched']:,} (changed {summary['changed']:,}), unmatched in {a} "
             f"{summary['unmatched_a']:,}, unmatched in {b} {summary['unmatched_b']:,}; "
             f"{result['matching']} matching, threshold {result['threshold']}, identical {result['identical']}, "
             f"scoring={result['scoring']}, {result['seconds']:.2f} s", ""]
    if result["changed"]:
        lines.append(f"{'score':>7}  {'why':<10} {a + ' function':<40} {b + ' function'}")
        for entry in result["changed"][:limit]:
            lines.append(f"{entry['score']:>7.4f}  {'+'.join(entry['changed']):<10} "
                         f"{entry['a']['name'] + ' 0x%x' % entry['a']['address']:<40} "
                         f"{entry['b']['name']} 0x{entry['b']['address']:x}")
        if len(result["changed"]) > limit:
            lines.append(f"... {len(result['changed']) - limit:,} more changed (output=<file.json> has them all)")
        lines.append("")
    for side, name in (("unmatched_a", a), ("unmatched_b", b)):
        if result[side]:
            shown = ", ".join(f"{row['name']}" for row in result[side][:limit])
            more = f", ... {len(result[side]) - limit:,} more" if len(result[side]) > limit else ""
            lines.append(f"unmatched in {name}: {shown}{more}")
    return "\n".join(lines)
