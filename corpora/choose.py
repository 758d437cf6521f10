"""Pick, check or refresh a pinned Debian package list against a mirror's ``Packages`` index.

    python corpora/choose.py OUT.txt [--mirror URL] [--suite bookworm]   # the default selection, current versions
    python corpora/choose.py --check LIST [--mirror URL]                 # every pin exists on the mirror? exit 0/1
    python corpora/choose.py --refresh LIST [--mirror URL]               # rewrite LIST's versions to the mirror's

The list format is that of ``python -m undertale.data corpus OUT --packages LIST`` (docs/corpus.md):
``name=version`` (amd64) or ``name:arch=version``. The written list starts with a header comment naming
the suite, the date and the mirror. Only the suite itself is searched (not -updates or -security), so a
list written here resolves on any mirror of that suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from undertale.data.corpus.debian import DEFAULT_ARCHITECTURE, Pin, apt_mirrors, fetch_packages_index, parse_list

# ~50 amd64 packages: C and C++ shared libraries, daemons, command-line tools, compilers and assemblers
AMD64 = [
    # C libraries
    "zlib1g", "libzstd1", "liblzma5", "libbz2-1.0", "liblz4-1", "libssl3", "libcurl4", "libxml2", "libsqlite3-0",
    "libpcre2-8-0", "libpng16-16", "libjpeg62-turbo", "libgmp10", "libmpfr6", "libexpat1", "libffi8", "libgcrypt20",
    "libgnutls30", "libnettle8", "libyaml-0-2", "libevent-2.1-7", "libuv1", "libsodium23",
    # C++ libraries
    "libstdc++6", "libsnappy1v5", "libfmt9", "libre2-9", "libleveldb1d", "libjsoncpp25", "libtinyxml2-9",
    "libpugixml1v5", "libyaml-cpp0.7", "libzmq5", "libprotobuf32",
    # daemons
    "openssh-server", "nginx", "lighttpd", "memcached", "dnsmasq-base", "vsftpd", "cron", "rsyslog",
    # tools, compilers, assemblers
    "coreutils", "bash", "grep", "sed", "tar", "sqlite3", "make", "nasm", "binutils-x86-64-linux-gnu", "cpp-12",
]
# ~10 of the same packages as arm64 builds
ARM64 = ["zlib1g", "libzstd1", "libssl3", "libsqlite3-0", "libxml2", "libpcre2-8-0", "libstdc++6", "coreutils",
         "bash", "nginx"]


def _indexes(mirror: str, suite: str, arches: set[str]) -> dict:
    indexes = {}
    for arch in sorted(arches):
        print(f"index: {mirror} {suite} main binary-{arch}", file=sys.stderr)
        indexes[arch] = fetch_packages_index(mirror, suite, arch)
    return indexes


def _version(indexes: dict, name: str, arch: str) -> str | None:
    # Architecture: all packages (e.g. transitional ones such as nginx-core) hold no machine code: not picked
    entries = [entry for entry in indexes[arch].get(name, []) if entry.arch != "all"]
    return max((entry.version for entry in entries), default=None, key=_debian_key) if entries else None


def _debian_key(version: str):
    """Enough of Debian's version order to pick the newest when an index lists several (rare within a suite)."""
    import re

    return [(int(part) if part.isdigit() else part) for part in re.split(r"(\d+)", version)]


def _header(mirror: str, suite: str, note: str) -> str:
    return (f"# Pinned Debian binary packages: suite {suite}, component main, checked {time.strftime('%Y-%m-%d')} "
            f"against {mirror}\n# {note}\n# format: name=version (amd64) or name:arch=version (amd64, arm64, i386); "
            "see docs/corpus.md\n")


def write(out: Path, mirror: str, suite: str) -> int:
    indexes = _indexes(mirror, suite, {"amd64", "arm64"})
    lines, missing = [], []
    for arch, names in (("amd64", AMD64), ("arm64", ARM64)):
        lines.append(f"\n# {arch}")
        for name in names:
            version = _version(indexes, name, arch)
            if version is None:
                missing.append(f"{name}:{arch}")
                continue
            lines.append(f"{name}={version}" if arch == DEFAULT_ARCHITECTURE else f"{name}:{arch}={version}")
    for item in missing:
        print(f"error: {item}: not in {suite} at {mirror}", file=sys.stderr)
    note = f"{len(AMD64)} amd64 packages and {len(ARM64)} of them as arm64 builds, written by corpora/choose.py"
    out.write_text(_header(mirror, suite, note) + "\n".join(lines) + "\n")
    print(f"{out}: {sum(1 for line in lines if '=' in line)} packages")
    return 1 if missing else 0


def check(path: Path, mirror: str, suite: str, refresh: bool) -> int:
    pins = parse_list(path)
    indexes = _indexes(mirror, suite, {pin.arch for pin in pins})
    problems, changed = 0, {}
    for pin in pins:
        versions = {entry.version for entry in indexes[pin.arch].get(pin.name, [])}
        if pin.version in versions:
            continue
        if refresh and versions:
            changed[pin.spec] = Pin(pin.name, _version(indexes, pin.name, pin.arch), pin.arch)
            continue
        problems += 1
        print(f"error: {pin.spec}: {suite} at {mirror} has {', '.join(sorted(versions)) or 'no such package'}",
              file=sys.stderr)
    if refresh:
        text = path.read_text().splitlines()
        body = [line for line in text if not line.startswith("# Pinned Debian") and not line.startswith("# format:")]
        if body and body[0].startswith("# ") and "choose.py" in body[0]:
            note = body.pop(0)[2:]
        else:
            note = "refreshed by corpora/choose.py --refresh"
        out = []
        for line in body:
            stripped = line.split("#", 1)[0].strip()
            for spec, pin in changed.items():
                old = spec.replace(":amd64=", "=") if spec.split("=")[0].endswith(":amd64") else spec
                if stripped in (spec, old):
                    line = pin.spec.replace(":amd64=", "=") if pin.arch == "amd64" else pin.spec
                    print(f"{spec} -> {pin.version}")
            out.append(line)
        path.write_text(_header(mirror, suite, note) + "\n".join(out) + "\n")
    print(f"{path}: {len(pins) - problems} of {len(pins)} pins found in {suite} at {mirror}"
          + (f", {len(changed)} refreshed" if refresh else ""))
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="list to write with the default selection")
    parser.add_argument("--check", metavar="LIST", help="check that every pin of LIST exists on the mirror")
    parser.add_argument("--refresh", metavar="LIST", help="rewrite LIST's versions to what the mirror has now")
    parser.add_argument("--mirror", default=None, help="default: /etc/apt's Debian mirror, else deb.debian.org")
    parser.add_argument("--suite", default="bookworm")
    args = parser.parse_args(argv)
    mirror = (args.mirror or apt_mirrors()[0]).rstrip("/")
    try:
        if args.check or args.refresh:
            return check(Path(args.check or args.refresh), mirror, args.suite, refresh=bool(args.refresh))
        if not args.out:
            parser.error("give OUT, --check LIST or --refresh LIST")
        return write(Path(args.out), mirror, args.suite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
