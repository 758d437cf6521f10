"""Read the jobs, check their code versions, and write ``results.md``, ``results.csv`` and the figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from undertale.report import figures
from undertale.runtime.errors import UsageError
from undertale.report.jobs import FAILED, Job, read_jobs
from undertale.report.scaling import COLUMNS as SCALING_COLUMNS, FORMATS as SCALING_FORMATS, is_scaling, scaling_rows
from undertale.report.table import COMMAND, JOB, Table, best_column, build_table, direction, markdown, write_csv
from undertale.report.versions import check_versions

RESULTS_MD, RESULTS_CSV, SCALING_CSV, LOSS_PNG = "results.md", "results.csv", "scaling.csv", "loss.png"
DEFAULT_OBJECTIVE = "val/accuracy"


@dataclass
class Report:
    """What a report found and wrote."""

    table: Table
    output: Path
    scaling: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(job.status == FAILED for job in self.table.jobs)

    def summary(self) -> str:
        """One line: the best job and the command that reproduces it (or the scaling result)."""
        table, count = self.table, len(self.table.rows)
        jobs = f"{count} job{'s' if count != 1 else ''}" + (f" ({self.failed} failed)" if self.failed else "")
        parts = []
        best = table.best()
        if best is not None:
            row = table.rows[best]
            value = table.objective_value(row)
            parts.append(f"best of {jobs} by {table.objective} ({table.mode}): {row[JOB]} ({value:.4f}, "
                         f"{table.jobs[best].run.path}); reproduce: {row[COMMAND]}")
        else:
            parts.append(f"no finished job has {table.objective} ({jobs})")
        if len({row["processes"] for row in self.scaling}) > 1:
            last = self.scaling[-1]
            parts.append(f"scaling: {last['tokens/s']:,.0f} tokens/s at {last['processes']} processes, "
                         f"efficiency {last['efficiency']:.2f}")
        return "; ".join(parts + [f"report: {self.output / RESULTS_MD}"])


def _known_metrics(jobs: list[Job], table: Table) -> set[str]:
    known = {key for job in jobs for key in job.history.series}
    known |= {key for job in jobs for key, value in job.metrics.items() if isinstance(value, (int, float))}
    return known | {column for column in table.columns if any(row.get(column) is not None for row in table.rows)}


def _hardware(jobs: list[Job]) -> str:
    seen: dict[str, None] = {}
    for job in jobs:
        hardware = (job.environment or {}).get("hardware") or {}
        gpus = hardware.get("gpus") or []
        if gpus:
            names = dict.fromkeys(gpus)
            seen[", ".join(f"{gpus.count(name)} x {name}" for name in names)] = None
        elif hardware:
            seen[f"{hardware.get('cpu', 'CPU')}, {hardware.get('cpu_count', '?')} CPU cores, no GPU"] = None
    return "; ".join(seen) or "hardware not recorded"


def _filled(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """``columns`` without those that have no value in any row (MFU on CPUs, nodes of old runs)."""
    return [column for column in columns if any(row.get(column) is not None for row in rows)]


def _markdown(report: Report, sources: list[str]) -> str:
    table = report.table
    versions = ", ".join(report.versions) or "not recorded"
    lines = [
        "# Results", "",
        f"{len(table.rows)} job{'s' if len(table.rows) != 1 else ''} from {', '.join(sources)}"
        + (f" ({report.failed} failed)" if report.failed else "")
        + f", sorted by {best_column(table.objective)} ({'higher' if table.mode == 'max' else 'lower'} is better; "
        f"failed jobs last). Code: {versions}. Hardware (of rank 0's node): {_hardware(table.jobs)}.", "",
        markdown(table.columns, table.rows), "",
    ]
    best = table.best()
    if best is not None:
        lines += [f"Best: job {table.rows[best][JOB]}. Reproduce it with:", "", "```bash",
                  table.rows[best][COMMAND], "```", ""]
    if report.scaling:
        lines += ["## Scaling", "",
                  "Throughput: the median logged `train/tokens_per_sec` of each job (all processes; the first "
                  "interval, warm-up, left out when three or more were logged). Efficiency: tokens/s per process "
                  "over that of the smallest process count; speed-up: tokens/s over that count's.", "",
                  markdown(_filled(list(SCALING_COLUMNS), report.scaling), report.scaling, SCALING_FORMATS), ""]
    pictures = [path for path in report.files if path.suffix == ".png"]
    if pictures:
        lines += ["## Figures", ""] + [f"![{path.stem}]({path.name})" for path in pictures] + [""]
    return "\n".join(lines)


def make_report(paths: list[str], output: Optional[str] = None, objective: Optional[str] = None,
                mode: Optional[str] = None, allow_mixed: bool = False) -> Report:
    """Read the runs under ``paths`` and write the report.

    Arguments:
        paths: run directories, sweep (multirun) directories, or folders holding them.
        output: where to write; None: the first of ``paths``.
        objective: the metric that ranks the jobs (default ``val/accuracy``).
        mode: ``max`` or ``min``; None: ``min`` for losses and perplexities, else ``max``.
        allow_mixed: accept runs of different code versions.

    Returns:
        The :class:`Report`, with the files written.

    Raises:
        UsageError: no runs, an incomplete run directory, mixed code versions, an objective no job logged.
        OSError: the output directory cannot be written.
    """
    chosen = objective or DEFAULT_OBJECTIVE
    mode = mode or direction(chosen)
    jobs = read_jobs(paths)
    found = check_versions(jobs, allow_mixed)
    table = build_table(jobs, chosen, mode)
    if objective is not None and objective not in _known_metrics(jobs, table):
        names = sorted(name for name in _known_metrics(jobs, table) if name.startswith(("val/", "eval/", "train/")))
        raise UsageError(f"no job logged {objective}; logged: {', '.join(names) or 'nothing'}")
    directory = Path(output or paths[0]).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    report = Report(table, directory, versions=found,
                    warnings=[warning for job in jobs for warning in job.history.warnings])
    if len(found) > 1:
        table.columns.append("code")
    write_csv(directory / RESULTS_CSV, table.csv_columns if "code" not in table.columns else
              table.columns + [column for column in table.csv_columns if column not in table.columns], table.rows)
    report.files.append(directory / RESULTS_CSV)
    if (loss := figures.loss_figure(table, directory / LOSS_PNG)) is not None:
        report.files.append(loss)
    report.files += figures.objective_figures(table, directory)
    if is_scaling(table):
        report.scaling = scaling_rows(table)
        if report.scaling:
            write_csv(directory / SCALING_CSV, list(SCALING_COLUMNS), report.scaling)
            report.files.append(directory / SCALING_CSV)
            gpus = any(((job.environment or {}).get("hardware") or {}).get("gpus") for job in table.jobs)
            report.files += figures.scaling_figures(report.scaling, directory, gpus)
    (directory / RESULTS_MD).write_text(_markdown(report, list(paths)))
    report.files.insert(0, directory / RESULTS_MD)
    return report
