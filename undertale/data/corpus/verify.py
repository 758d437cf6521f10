"""Check a built corpus against its manifest: ``python -m undertale.data verify CORPUS [--cache DIR]``.

Every shard's size and SHA256 is compared with the manifest, and parquet files the manifest does not
list are reported. Where the inputs are still available, they are checked too: for a Debian corpus,
each package's ``.deb`` in the cache (``CACHE/debs/<sha256>.deb``: its SHA256 and the SHA256 of each ELF
file it holds); for a corpus of files, each path's SHA256. The fingerprint is recomputed from the
inputs the manifest records. Inputs that are not available are counted, not failed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

from undertale.data.archive import file_sha256
from undertale.data.corpus.build import SPLITS, manifest_fingerprint
from undertale.data.corpus.deb import DebError, deb_elf_files


def verify_corpus(
    directory: str | os.PathLike, cache: Optional[str | os.PathLike] = None, inputs: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """The problems found in the corpus at ``directory`` (one line each, also passed to ``log``), then a final
    ``OK``/``FAILED`` line to ``log``.

    Raises:
        ValueError: when ``directory`` holds no manifest or an unreadable one (a usage error).
    """
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{directory}: no manifest.json (not a corpus, or its build did not finish)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable manifest: {error}") from None
    if "shard_files" not in manifest:
        raise ValueError(f"{path}: manifest of format {manifest.get('format_version', '< 3')} records no shard "
                         "digests: rebuild the corpus to verify it")
    problems: list[str] = []

    def problem(line: str) -> None:
        problems.append(line)
        log(line)

    listed = manifest["shard_files"]
    for name, expected in sorted(listed.items()):
        shard = directory / name
        if not shard.is_file():
            problem(f"{name}: missing")
            continue
        size = shard.stat().st_size
        if size != expected["size"]:
            problem(f"{name}: size {size:,} bytes, the manifest says {expected['size']:,}")
        elif file_sha256(shard) != expected["sha256"]:
            problem(f"{name}: SHA256 differs from the manifest (corrupt or changed)")
    for split in SPLITS:
        for extra in sorted((directory / split).glob("*.parquet")) if (directory / split).is_dir() else []:
            if f"{split}/{extra.name}" not in listed:
                problem(f"{split}/{extra.name}: not listed in the manifest")
    try:
        if manifest_fingerprint(manifest) != manifest.get("fingerprint"):
            problem("fingerprint: the manifest's fingerprint does not match its recorded inputs and options")
    except (KeyError, TypeError) as error:
        problem(f"fingerprint: cannot recompute it from the manifest ({type(error).__name__}: {error})")
    checked = Counter()
    if inputs and manifest.get("source") == "debian":
        root = Path(cache).expanduser() if cache else Path(manifest.get("deb_cache") or ".")
        for record in manifest.get("packages", []):
            spec = f"{record['package']}:{record['arch']}={record['version']}"
            deb = root / "debs" / f"{record['sha256']}.deb"
            if not deb.is_file():
                checked["not available"] += 1
                continue
            if file_sha256(deb) != record["sha256"]:
                problem(f"{spec}: {deb} does not have the SHA256 the manifest records")
                continue
            try:
                found = {inside: hashlib.sha256(data).hexdigest() for inside, data in deb_elf_files(
                    str(deb), max_member_bytes=manifest.get("max_member_bytes", 1 << 62))}
            except DebError as error:
                problem(f"{spec}: {error}")
                continue
            # a file skipped for time or memory has no SHA256 (it is no input of the corpus)
            unread = {item["path"] for item in record["files"] if item["sha256"] is None}
            found = {inside: sha for inside, sha in found.items() if inside not in unread}
            recorded = {item["path"]: item["sha256"] for item in record["files"] if item["sha256"] is not None}
            if found != recorded:
                changed = sorted(set(found.items()) ^ set(recorded.items()))
                problem(f"{spec}: ELF files differ from the manifest ({len(changed)} differences, e.g. {changed[0][0]})")
            checked["checked"] += 1
    elif inputs:
        for item in manifest.get("input_files", []):
            if not os.path.isfile(item["path"]):
                checked["not available"] += 1
                continue
            if file_sha256(item["path"]) != item["sha256"]:
                problem(f"{item['path']}: content differs from the manifest's SHA256")
            checked["checked"] += 1
    what = f"{len(listed)} shards, {checked['checked']:,} inputs checked, {checked['not available']:,} not available"
    log(f"FAILED: {len(problems)} problems ({what})" if problems else f"OK: {directory} ({what}; fingerprint "
        f"{manifest.get('fingerprint')})")
    return problems
