"""Throughput against the number of processes: speed-up and scaling efficiency from measured tokens/s."""

from __future__ import annotations

from typing import Any

from undertale.report.jobs import FAILED
from undertale.report.table import JOB, MFU, STATUS, TOKENS, WORLD, Table, shown

SCALING_KEYS = ("trainer.devices", "trainer.num_nodes")
SETTING, PROCESSES, NODES, PER_PROCESS, SPEEDUP, EFFICIENCY = (
    "setting", "processes", "nodes", "tokens/s per process", "speed-up", "efficiency")
COLUMNS = (JOB, SETTING, PROCESSES, NODES, TOKENS, PER_PROCESS, SPEEDUP, EFFICIENCY, MFU)
FORMATS = {PER_PROCESS: ",.0f", SPEEDUP: ".2f", EFFICIENCY: ".2f"}  # for table.markdown


def is_scaling(table: Table) -> bool:
    """Whether the jobs form a scaling sweep: they differ in ``trainer.devices`` or ``trainer.num_nodes``,
    or their measured world sizes differ."""
    sizes = {row[WORLD] for row in table.rows if row[WORLD] is not None and row[STATUS] != FAILED}
    return any(key in table.swept for key in SCALING_KEYS) or len(sizes) > 1


def _setting(table: Table, row: dict[str, Any]) -> str:
    """The job's other swept values: jobs that share them are one scaling series."""
    return ", ".join(f"{key}={shown(row.get(key))}" for key in table.swept if key not in SCALING_KEYS)


def scaling_rows(table: Table) -> list[dict[str, Any]]:
    """One row per job with a measured throughput, in series of jobs that differ only in process count.

    Within a series (the jobs sharing every swept value other than ``trainer.devices`` and
    ``trainer.num_nodes``), ``efficiency`` is tokens/s per process over the per-process tokens/s of the
    smallest world size (a single process when the sweep has one; the mean when several jobs share it), and
    ``speed-up`` is tokens/s over that world size's. Series with a single world size are left out.

    Returns:
        Rows with the keys of :data:`COLUMNS`, by series and world size.
    """
    series: dict[str, list[tuple[dict, Any]]] = {}
    for row, job in zip(table.rows, table.jobs):
        if row[STATUS] != FAILED and row[TOKENS] and row[WORLD]:
            series.setdefault(_setting(table, row), []).append((row, job))
    rows = []
    for setting, measured in series.items():
        if len({row[WORLD] for row, _ in measured}) < 2:
            continue
        measured.sort(key=lambda pair: (pair[0][WORLD], pair[0][JOB]))
        smallest = measured[0][0][WORLD]
        base = [row[TOKENS] / row[WORLD] for row, _ in measured if row[WORLD] == smallest]
        per_process_base = sum(base) / len(base)
        for row, job in measured:
            nodes = (job.config.get("trainer") or {}).get("num_nodes")
            per_process = row[TOKENS] / row[WORLD]
            rows.append({
                JOB: row[JOB], SETTING: setting or None, PROCESSES: row[WORLD],
                NODES: nodes if isinstance(nodes, int) else None, TOKENS: row[TOKENS], PER_PROCESS: per_process,
                SPEEDUP: row[TOKENS] / (per_process_base * smallest), EFFICIENCY: per_process / per_process_base,
                MFU: row.get(MFU),
            })
    return rows
