"""The code version each job ran (git commit and dirty flag of its ``environment.json``); mixed ones are refused."""

from __future__ import annotations

from typing import Optional

from undertale.runtime.errors import UsageError
from undertale.report.jobs import Job


def code_version(job: Job) -> Optional[str]:
    """``<commit[:10]>`` or ``<commit[:10]>+dirty``; None when the run recorded no git state."""
    git = (job.environment or {}).get("git") or {}
    commit = git.get("commit")
    if not commit:
        return None
    return f"{commit[:10]}+dirty" if git.get("dirty") else str(commit[:10])


def versions(jobs: list[Job]) -> dict[str, list[str]]:
    """Each code version and the labels of the jobs that ran it (jobs without git state left out)."""
    found: dict[str, list[str]] = {}
    for job in jobs:
        version = code_version(job)
        if version is not None:
            found.setdefault(version, []).append(job.label)
    return found


def _jobs(labels: list[str], limit: int = 4) -> str:
    shown = ", ".join(labels[:limit]) + (f", ... ({len(labels)} jobs)" if len(labels) > limit else "")
    return f"job{'s' if len(labels) > 1 else ''} {shown}"


def check_versions(jobs: list[Job], allow_mixed: bool) -> dict[str, list[str]]:
    """The code versions of ``jobs``.

    Raises:
        UsageError: the jobs ran different commits, or the same commit clean and dirty, and ``allow_mixed``
            is false; the message names each version and its jobs.
    """
    found = versions(jobs)
    if len(found) > 1 and not allow_mixed:
        named = "; ".join(f"{version} ({_jobs(labels)})" for version, labels in found.items())
        raise UsageError(f"the runs come from different code versions: {named}; "
                         "compare them anyway with --allow-mixed")
    return found
