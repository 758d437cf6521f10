"""Pick, check or refresh a pinned Debian package list against a mirror's ``Packages`` index.

    python corpora/choose.py OUT.txt [--mirror URL] [--suite bookworm]   # the default selection, current versions
    python corpora/choose.py OUT.txt --size N --arm64 K                  # N amd64 + K arm64 packages by the rule below
    python corpora/choose.py --check LIST [--mirror URL]                 # every pin exists on the mirror? exit 0/1
    python corpora/choose.py --refresh LIST [--mirror URL]               # rewrite LIST's versions to the mirror's

The list format is that of ``python -m undertale.data corpus OUT --packages LIST`` (docs/corpus.md):
``name=version`` (amd64) or ``name:arch=version``. The written list starts with a header comment naming
the suite, the date and the mirror. Only the suite itself is searched (not -updates or -security), so a
list written here resolves on any mirror of that suite.

**The sized rule** (``--size N --arm64 K``; how ``debian-bookworm-300.txt`` and ``debian-bookworm-1k.txt``
were written). Deterministic and seed-free: the same index gives the same list.

1. Candidates: the amd64 ``Packages`` entries of the suite that are not ``Architecture: all``, whose
   ``Section`` (without a ``contrib/``-style prefix) is one of :data:`SECTIONS`, whose ``Installed-Size``
   is within [:data:`MIN_INSTALLED_KIB`, :data:`MAX_INSTALLED_KIB`] KiB, and whose name does not end
   in one of :data:`SKIP_SUFFIXES` (headers, static archives, debug files, data: no machine code),
   whose ``Depends`` or ``Pre-Depends`` names ``libc6`` (dynamically linked machine code: without it a
   non-``all`` package was found to hold scripts, Erlang or Raku byte code, data or nothing), and whose
   ``Built-Using`` and ``Static-Built-Using`` name no ``golang-*`` (Go programs are statically linked:
   each would bring its own copy of the Go runtime, and the corpus is about C and C++ code).
2. Order: first the default selection (:data:`AMD64`, the small list, in its order, whatever its size),
   then the candidates section by section in a fixed interleave: the next pick goes to the section
   with the largest ``weight / (picked + 1)`` (D'Hondt's divisor rule over :data:`SECTIONS`' weights,
   ties by section name), and within a section by ``Priority`` (required, important, standard,
   optional, extra) and then by the SHA-256 of the package name (a fixed shuffle that spreads the
   pick over the alphabet instead of taking ``liba*`` first). At most one binary package per source
   package (the default selection's sources count as taken).
3. The list is the first N of that order; the arm64 builds are the first K of it (the default
   selection's :data:`ARM64` first) that the arm64 index has as a non-``all`` package.

So every list written from the same index is a prefix of every larger one: the small list (52 + 10)
within 300 (+ 60) within 1,000 (+ 200), and growth compares like with like. The written list is sorted
by name within each architecture and section; its header names the suite, the date, the mirror and the
command.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import re
import sys
import time
import urllib.request
from collections import Counter
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


# sections the sized rule draws from, with their weights (libraries most, then tools, servers, toolchains)
SECTIONS = {
    "libs": 10, "devel": 3, "net": 3, "utils": 3, "admin": 2, "science": 2, "comm": 1, "database": 1,
    "editors": 1, "graphics": 1, "httpd": 1, "interpreters": 1, "mail": 1, "math": 1, "shells": 1, "sound": 1,
    "text": 1, "vcs": 1, "video": 1, "web": 1,
}
MIN_INSTALLED_KIB = 64  # smaller packages are mostly a symlink, a script or a tiny helper
MAX_INSTALLED_KIB = 16384  # bigger ones (LLVM, browsers, game data) would dominate the corpus and the build time
SKIP_SUFFIXES = ("-dev", "-dbg", "-dbgsym", "-doc", "-data", "-common", "-headers", "-static")
PRIORITIES = ("required", "important", "standard", "optional", "extra")


def _raw_index(mirror: str, suite: str, arch: str) -> dict[str, dict[str, str]]:
    """The fields of every package of ``suite``'s main ``Packages.xz`` for ``arch`` (newest version of a name)."""
    url = f"{mirror}/dists/{suite}/main/binary-{arch}/Packages.xz"
    print(f"index: {url}", file=sys.stderr)
    with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "undertale-choose"}),
                                timeout=60) as response:
        text = lzma.decompress(response.read()).decode("utf-8", errors="replace")
    packages: dict[str, dict[str, str]] = {}
    for paragraph in text.split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name or fields.get("Architecture") == "all":
            continue
        old = packages.get(name)
        if old is None or _debian_key(fields.get("Version", "")) > _debian_key(old.get("Version", "")):
            packages[name] = fields
    return packages


def _libc(fields: dict[str, str]) -> bool:
    """Linked against the C library (the package holds ELF code)."""
    depends = fields.get("Depends", "") + "," + fields.get("Pre-Depends", "")
    return bool(re.search(r"(^|[\s,|])libc6(\.1)?([\s(,|:]|$)", depends))


def _go(fields: dict[str, str]) -> bool:
    """A Go program or library (statically linked with the Go runtime and its Go dependencies)."""
    return any("golang-" in fields.get(key, "") for key in ("Built-Using", "Static-Built-Using"))


def sized_order(amd64: dict[str, dict[str, str]]) -> list[str]:
    """Every amd64 package the sized rule can pick, in pick order (see the module's docstring)."""
    order = [name for name in AMD64 if name in amd64]
    source = lambda fields: fields.get("Source", fields["Package"]).split()[0]  # noqa: E731
    taken = {source(amd64[name]) for name in order}
    queues: dict[str, list[str]] = {section: [] for section in SECTIONS}
    for name, fields in amd64.items():
        section = fields.get("Section", "").split("/")[-1]
        try:
            size = int(fields.get("Installed-Size", "0"))
        except ValueError:
            continue
        if (section in queues and MIN_INSTALLED_KIB <= size <= MAX_INSTALLED_KIB and name not in AMD64
                and not name.endswith(SKIP_SUFFIXES) and _libc(fields) and not _go(fields)):
            queues[section].append(name)
    def rank(name: str) -> tuple[int, str]:
        priority = amd64[name].get("Priority", "optional")
        return (PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES),
                hashlib.sha256(name.encode()).hexdigest())

    for names in queues.values():
        names.sort(key=rank)
    picked: Counter = Counter()
    heads = {section: 0 for section in SECTIONS}
    names_order = sorted(SECTIONS)
    while True:
        open_ = [section for section in names_order if heads[section] < len(queues[section])]
        if not open_:
            return order
        # D'Hondt: the largest weight / (picked + 1); a tie goes to the section first by name
        section = max(open_, key=lambda s: (SECTIONS[s] / (picked[s] + 1), -names_order.index(s)))
        name = queues[section][heads[section]]
        heads[section] += 1
        if source(amd64[name]) in taken:
            continue
        taken.add(source(amd64[name]))
        picked[section] += 1
        order.append(name)


def write_sized(out: Path, mirror: str, suite: str, size: int, arm64: int, command: str) -> int:
    amd64_index, arm64_index = _raw_index(mirror, suite, "amd64"), _raw_index(mirror, suite, "arm64")
    order = sized_order(amd64_index)
    if size > len(order):
        raise ValueError(f"--size {size}: the rule finds only {len(order)} packages in {suite}")
    chosen = order[:size]
    arm = [name for name in ARM64 if name in arm64_index and name in chosen]
    arm += [name for name in chosen if name in arm64_index and name not in arm]
    if arm64 > len(arm):
        raise ValueError(f"--arm64 {arm64}: only {len(arm)} of the {size} packages have arm64 builds")
    arm = arm[:arm64]
    section = lambda index, name: index[name].get("Section", "").split("/")[-1]  # noqa: E731
    lines = []
    for arch, names, index in (("amd64", chosen, amd64_index), ("arm64", arm, arm64_index)):
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(section(index, name), []).append(name)
        lines.append(f"\n# {arch}: {len(names)} packages")
        for group in sorted(groups):
            lines.append(f"# {arch} {group}: {len(groups[group])}")
            for name in sorted(groups[group]):
                version = index[name]["Version"]
                lines.append(f"{name}={version}" if arch == DEFAULT_ARCHITECTURE else f"{name}:{arch}={version}")
    note = (f"{size} amd64 packages and {len(arm)} of them as arm64 builds, written by corpora/choose.py "
            f"(the sized rule: see its docstring)\n# command: {command}")
    out.write_text(_header(mirror, suite, note) + "\n".join(lines) + "\n")
    print(f"{out}: {size + len(arm)} packages ({size} amd64, {len(arm)} arm64)")
    return 0


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
    parser.add_argument("out", nargs="?", help="list to write: the default selection, or the sized rule with --size")
    parser.add_argument("--check", metavar="LIST", help="check that every pin of LIST exists on the mirror")
    parser.add_argument("--refresh", metavar="LIST", help="rewrite LIST's versions to what the mirror has now")
    parser.add_argument("--mirror", default=None, help="default: /etc/apt's Debian mirror, else deb.debian.org")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--size", type=int, default=None, metavar="N",
                        help="write N amd64 packages by the sized rule (see the docstring), not the default selection")
    parser.add_argument("--arm64", type=int, default=None, metavar="K",
                        help="with --size: the arm64 builds of the first K (default: N / 5)")
    args = parser.parse_args(argv)
    mirror = (args.mirror or apt_mirrors()[0]).rstrip("/")
    try:
        if args.check or args.refresh:
            return check(Path(args.check or args.refresh), mirror, args.suite, refresh=bool(args.refresh))
        if not args.out:
            parser.error("give OUT, --check LIST or --refresh LIST")
        if args.size is not None:
            arm64 = args.arm64 if args.arm64 is not None else args.size // 5
            command = f"python corpora/choose.py {args.out} --size {args.size} --arm64 {arm64}" + (
                f" --suite {args.suite}" if args.suite != "bookworm" else "") + (
                f" --mirror {args.mirror}" if args.mirror else "")
            return write_sized(Path(args.out), mirror, args.suite, args.size, arm64, command)
        if args.arm64 is not None:
            parser.error("--arm64 needs --size")
        return write(Path(args.out), mirror, args.suite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
