"""Read what an offline W&B run wrote (``run-<id>.wandb``): its run record, config, history, summary, exit code.

Useful to check runs before ``wandb sync``, and used by the tests. The file is
a LevelDB-style log (32 KiB blocks of ``crc32, length, type`` records) of
W&B ``Record`` protobufs.

    python -m undertale.training.wandb_offline outputs/train/runs/<time>/wandb/offline-run-*
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """The parts of an offline run that matter for checking it."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: Optional[int] = None
    preempting: bool = False  # the run was marked preempted (``run.mark_preempting()``)


def records(path: Path) -> Iterator[bytes]:
    """Raw protobuf payloads of a ``.wandb`` file, up to where it is cut short (a killed run's).

    Raises:
        ValueError: when the file is not a W&B transaction log.
    """
    data = Path(path).read_bytes()
    identity = HEADER.unpack_from(data, 0)[0] if len(data) >= HEADER.size else b""
    if identity != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    offset, pending = HEADER.size, b""
    while offset + RECORD.size <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < RECORD.size:
            offset += left_in_block
            continue
        _, length, kind = RECORD.unpack_from(data, offset)
        payload = data[offset + RECORD.size : offset + RECORD.size + length]
        if len(payload) < length:  # the file of a killed run ends inside a record
            break
        offset += RECORD.size + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""
        elif kind == 0 and length == 0:
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
        else:
            break


def _value(item: Any) -> Any:
    key = ".".join(item.nested_key) if item.nested_key else item.key
    return key, json.loads(item.value_json)


def read_offline_run(directory: str | Path) -> OfflineRun:
    """Parse ``directory/run-*.wandb`` (an ``offline-run-*`` folder)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    files = sorted(Path(directory).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {directory}")
    run = OfflineRun()
    for payload in records(files[0]):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:  # a record cut short by a kill
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            run.job_type, run.tags = record.run.job_type, list(record.run.tags)
            run.config.update(_value(item) for item in record.run.config.update)
        elif kind == "config":
            run.config.update(_value(item) for item in record.config.update)
        elif kind == "history":
            run.history.append(dict(_value(item) for item in record.history.item))
        elif kind == "summary":
            run.summary.update(_value(item) for item in record.summary.update)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
        elif kind == "preempting":
            run.preempting = True
    return run


def main(argv: Optional[list[str]] = None) -> int:
    for directory in argv if argv is not None else sys.argv[1:]:
        run = read_offline_run(directory)
        print(f"{directory}: id {run.run_id}, name {run.name!r}, group {run.group!r}, exit code {run.exit_code}")
        steps = [row["_step"] for row in run.history if "_step" in row]
        span = f" (_step {min(steps)}..{max(steps)})" if steps else ""
        print(f"  {len(run.history)} history rows{span}; summary: " + ", ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in sorted(run.summary.items()) if not key.startswith("_")
        ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
