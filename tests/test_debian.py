"""Corpora from pinned Debian binary packages: package lists, the index, downloads by hash (resumed, checked),
``.deb`` reading without dpkg, the content fingerprint and ``verify``.

Every test but the one marked ``network`` serves tiny ``.deb`` files (a C program and a shared library compiled
here) and a ``Packages.xz`` index from a local HTTP server on 127.0.0.1 that honours Range requests.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from undertale.data.corpus.build import CorpusOptions
from undertale.data.corpus.deb import DebError, deb_elf_files
from undertale.data.corpus.debian import Pin, apt_mirrors, build_debian_corpus, parse_list
from undertale.data.corpus.verify import verify_corpus

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = CorpusOptions(validation_fraction=0.4)

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
static int square(int x) { return x * x + VARIANT; }
int sum(const int *values, int count) { int total = 0; for (int i = 0; i < count; i++) total += square(values[i]); return total; }
int main(int argc, char **argv) { int values[4] = {argc, 2, 3, 4}; printf("%d\n", sum(values, 4)); return argc > 1 ? atoi(argv[1]) : 0; }
"""
LIBRARY = r"""
int lib_add(int a, int b) { return a + b; }
int lib_mul(int a, int b) { int r = 0; for (int i = 0; i < b; i++) r = lib_add(r, a); return r; }
double lib_mean(const double *v, int n) { double s = 0; for (int i = 0; i < n; i++) s += v[i]; return n ? s / n : 0; }
"""


def _compile(tmp: Path, source: str, name: str, flags: list[str]) -> bytes:
    (tmp / f"{name}.c").write_text(source)
    subprocess.run(["gcc", "-O1", *flags, "-o", str(tmp / name), str(tmp / f"{name}.c")], check=True)
    return (tmp / name).read_bytes()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode())
        out.write(data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def _tar_xz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        directories = sorted({str(Path(name).parent) for name in files} - {"."})
        for directory in ["."] + directories:
            info = tarfile.TarInfo(directory if directory == "." else f"./{directory}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return lzma.compress(raw.getvalue())


def make_deb(name: str, version: str, files: dict[str, bytes], arch: str = "amd64") -> bytes:
    control = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nDescription: test\n".encode()
    return _ar([("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz({"control": control})),
                ("data.tar.xz", _tar_xz(files))])


class Archive:
    """A tiny Debian mirror under ``root/debian``: pool files and a ``Packages.xz`` index, served over HTTP."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: list[str] = []
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.serve: dict[str, bytes] = {}  # path -> bytes served instead of the file (truncation)

    def add(self, name: str, version: str, data: bytes, arch: str = "amd64", sha256: str | None = None,
            size: int | None = None) -> str:
        filename = f"pool/main/{name[0]}/{name}/{name}_{version.split(':')[-1]}_{arch}.deb"
        path = self.root / "debian" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.entries.append(
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nSection: libs\nFilename: {filename}\n"
            f"Size: {size if size is not None else len(data)}\n"
            f"SHA256: {sha256 or hashlib.sha256(data).hexdigest()}\nDescription: test\n"
        )
        return filename

    def publish(self, arch: str = "amd64") -> None:
        index = self.root / "debian" / "dists" / "bookworm" / "main" / f"binary-{arch}"
        index.mkdir(parents=True, exist_ok=True)
        (index / "Packages.xz").write_bytes(lzma.compress("\n".join(self.entries).encode()))


def _handler(archive: Archive):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            relative = self.path.split("?", 1)[0].lstrip("/")
            archive.requests.append((relative, self.headers.get("Range")))
            path = archive.root / relative
            if relative in archive.serve:
                data = archive.serve[relative]
            elif path.is_file():
                data = path.read_bytes()
            else:
                self.send_error(404)
                return
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test packages")
    tmp = tmp_path_factory.mktemp("elf")
    return {
        "prog": _compile(tmp, PROGRAM.replace("VARIANT", "1"), "prog", []),
        "prog2": _compile(tmp, PROGRAM.replace("VARIANT", "2"), "prog2", []),
        "lib": _compile(tmp, LIBRARY, "libx.so.1", ["-shared", "-fPIC"]),
    }


@pytest.fixture
def mirror(tmp_path, binaries):
    archive = Archive(tmp_path / "www")
    archive.debs = {
        "prog": make_deb("prog", "1.0-1", {"usr/bin/prog": binaries["prog"], "usr/share/doc/prog/README": b"hi\n"}),
        "libx1": make_deb("libx1", "2:1.2-3", {"usr/lib/x86_64-linux-gnu/libx.so.1": binaries["lib"]}),
    }
    archive.add("prog", "1.0-1", archive.debs["prog"])
    archive.add("libx1", "2:1.2-3", archive.debs["libx1"])
    archive.publish()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(archive))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    archive.url = f"http://127.0.0.1:{server.server_address[1]}/debian"
    yield archive
    server.shutdown()
    server.server_close()


def _list(path: Path, *lines: str) -> Path:
    path.write_text("# test list\n\n" + "\n".join(lines) + "\n")
    return path


def _build(mirror, tmp_path, lines=("prog=1.0-1", "libx1=2:1.2-3"), cache="cache", out="corpus", **kwargs):
    packages = _list(tmp_path / f"{out}.txt", *lines)
    return build_debian_corpus(tmp_path / out, packages, OPTIONS, workers=1, mirror=mirror.url,
                               cache_dir=tmp_path / cache, progress=False, **kwargs)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "undertale.data", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _shards(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*.parquet"))}


def test_download_and_build(mirror, tmp_path):
    manifest = _build(mirror, tmp_path)
    assert manifest["failed_packages"] == {}
    assert manifest["counts"]["packages"] == 2 and manifest["files"] == 2
    assert manifest["counts"]["functions"] > 3
    records = {record["package"]: record for record in manifest["packages"]}
    assert records["prog"]["files"][0]["path"] == "/usr/bin/prog"
    assert records["prog"]["skipped_members"] == {"not ELF": 1}
    assert records["libx1"]["files"][0]["path"] == "/usr/lib/x86_64-linux-gnu/libx.so.1"
    assert records["libx1"]["version"] == "2:1.2-3" and records["libx1"]["section"] == "libs"
    assert {records["prog"]["split"], records["libx1"]["split"]} == {"train", "validation"}  # split by package
    for record in records.values():
        assert (tmp_path / "cache" / "debs" / f"{record['sha256']}.deb").is_file()
    assert set(manifest["shard_files"]) == {"train/shard-00000.parquet", "validation/shard-00000.parquet"}
    import pyarrow.parquet as pq

    names = set(pq.read_table(tmp_path / "corpus" / "train").column("name").to_pylist()) | set(
        pq.read_table(tmp_path / "corpus" / "validation").column("name").to_pylist())
    assert {"main", "lib_add", "lib_mul"} <= names
    sources = pq.read_table(tmp_path / "corpus" / "validation").column("source").to_pylist()
    assert all(":/usr/" in source for source in sources)
    # reused as is, without the mirror
    again = build_debian_corpus(tmp_path / "corpus", tmp_path / "corpus.txt", OPTIONS, workers=1,
                                mirror="http://127.0.0.1:9/debian", cache_dir=tmp_path / "cache", progress=False)
    assert again["fingerprint"] == manifest["fingerprint"]


def test_fingerprint_is_content_based(mirror, tmp_path, binaries):
    first = _build(mirror, tmp_path, cache="cache-a", out="a")
    second = _build(mirror, tmp_path, cache="cache-b", out="b")
    assert first["fingerprint"] == second["fingerprint"]
    assert _shards(tmp_path / "a") == _shards(tmp_path / "b")
    # the same pins with one file's content changed: another fingerprint
    changed = Archive(mirror.root)
    changed.add("prog", "1.0-1", make_deb("prog", "1.0-1", {"usr/bin/prog": binaries["prog2"]}))
    changed.add("libx1", "2:1.2-3", mirror.debs["libx1"])
    changed.publish()
    third = _build(mirror, tmp_path, cache="cache-c", out="c")
    assert third["fingerprint"] != first["fingerprint"]


def test_checksum_mismatch_is_one_line_and_exit_2(mirror, tmp_path):
    mirror.entries.clear()
    mirror.add("prog", "1.0-1", mirror.debs["prog"], sha256="0" * 64)
    mirror.add("libx1", "2:1.2-3", mirror.debs["libx1"])
    mirror.publish()
    packages = _list(tmp_path / "list.txt", "prog=1.0-1", "libx1=2:1.2-3")
    result = _cli("corpus", str(tmp_path / "corpus"), "--packages", str(packages), "--mirror", mirror.url,
                  "--cache", str(tmp_path / "cache"), "--workers", "1", cwd=ROOT)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "checksum mismatch" in line]
    assert len(lines) == 1 and lines[0].startswith("error: prog:amd64=1.0-1: checksum mismatch"), result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert list(manifest["failed_packages"]) == ["prog:amd64=1.0-1"]
    assert "FAILED prog:amd64=1.0-1: checksum mismatch" in result.stdout
    sha = hashlib.sha256(mirror.debs["libx1"]).hexdigest()
    assert (tmp_path / "cache" / "debs" / f"{sha}.deb").is_file()  # what worked is kept
    assert not list((tmp_path / "cache" / "debs").glob("0000*"))


def test_missing_package_and_version(mirror, tmp_path):
    lines = ("prog=9.9-9", "nosuch=1.0", "libx1=2:1.2-3")
    errors: list[str] = []
    with pytest.raises(ValueError, match="2 of 3 packages failed"):
        _build(mirror, tmp_path, lines=lines, errors=errors.append)
    assert any(line.startswith("prog:amd64=9.9-9: version 9.9-9 not in bookworm") and "1.0-1" in line
               for line in errors), errors
    assert any(line.startswith("nosuch:amd64=1.0: no package nosuch") for line in errors), errors
    # the manifest lists them; with allow_missing the same build succeeds
    manifest = _build(mirror, tmp_path, lines=lines, allow_missing=True, errors=errors.append)
    assert sorted(manifest["failed_packages"]) == ["nosuch:amd64=1.0", "prog:amd64=9.9-9"]
    assert manifest["counts"]["packages"] == 1 and manifest["counts"]["functions"] > 0


def test_truncated_and_non_deb_files(mirror, tmp_path):
    mirror.entries.clear()
    prog = mirror.add("prog", "1.0-1", mirror.debs["prog"])
    mirror.serve[f"debian/{prog}"] = mirror.debs["prog"][:100]  # the server cuts the download short
    not_deb = b"<html>not a package</html>\n"
    mirror.add("libx1", "2:1.2-3", not_deb)
    cut = mirror.debs["libx1"][: len(mirror.debs["libx1"]) // 2]  # an index-consistent but truncated .deb
    mirror.add("liby1", "1.0", cut)
    mirror.publish()
    errors: list[str] = []
    with pytest.raises(ValueError, match="3 of 3 packages failed"):
        _build(mirror, tmp_path, lines=("prog=1.0-1", "libx1=2:1.2-3", "liby1=1.0"), errors=errors.append)
    found = {line.split(":", 1)[0]: line for line in errors}
    assert "truncated download: 100 of" in found["prog"]
    assert "not a .deb" in found["libx1"]
    assert "truncated" in found["liby1"]
    assert len(list((tmp_path / "cache" / "debs").glob("*.part"))) == 1  # the cut download stays, to resume


def test_resume_after_partial_download(mirror, tmp_path):
    data = mirror.debs["prog"]
    sha = hashlib.sha256(data).hexdigest()
    partial = tmp_path / "cache" / "debs" / f"{sha}.deb.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:1000])  # what a killed download left
    manifest = _build(mirror, tmp_path, lines=("prog=1.0-1",))
    assert manifest["counts"]["downloaded_bytes"] == len(data) - 1000
    ranges = [header for path, header in mirror.requests if path.endswith(".deb")]
    assert ranges == ["bytes=1000-"]
    assert (tmp_path / "cache" / "debs" / f"{sha}.deb").read_bytes() == data and not partial.exists()


def test_verify_ok_then_failed_naming_the_shard(mirror, tmp_path):
    _build(mirror, tmp_path)
    lines: list[str] = []
    assert verify_corpus(tmp_path / "corpus", log=lines.append) == []
    assert lines[-1].startswith("OK") and "2 inputs checked" in lines[-1]
    result = _cli("verify", str(tmp_path / "corpus"), cwd=ROOT)
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("OK")
    shard = tmp_path / "corpus" / "train" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = _cli("verify", str(tmp_path / "corpus"), cwd=ROOT)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("train/shard-00000.parquet: SHA256 differs")
    assert result.stdout.splitlines()[-1].startswith("FAILED: 1 problems")
    assert _cli("verify", str(tmp_path / "nothing"), cwd=ROOT).returncode == 2


def test_verify_checks_cached_inputs(mirror, tmp_path):
    manifest = _build(mirror, tmp_path)
    record = next(record for record in manifest["packages"] if record["package"] == "prog")
    deb = tmp_path / "cache" / "debs" / f"{record['sha256']}.deb"
    deb.write_bytes(deb.read_bytes()[:-1] + b"\0")
    problems = verify_corpus(tmp_path / "corpus", log=lambda line: None)
    assert problems == [f"prog:amd64=1.0-1: {deb} does not have the SHA256 the manifest records"]


def test_list_syntax_error_is_file_line_and_no_work(tmp_path):
    packages = _list(tmp_path / "list.txt", "zlib1g=1:1.2.13.dfsg-1", "hello 2.10-3")
    result = _cli("corpus", str(tmp_path / "corpus"), "--packages", str(packages), "--mirror",
                  "http://127.0.0.1:9/debian", "--cache", str(tmp_path / "cache"), cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {packages}:4: expected name=version or name:arch=version, got 'hello 2.10-3'"]
    assert not (tmp_path / "corpus").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("line, message", [
    ("zlib1g:s390x=1.0", "architecture 's390x' is not one of amd64, arm64, i386"),
    ("Zlib=1.0", "is not a Debian package name"),
    ("zlib1g=", "expected name=version"),
    ("zlib1g=abc", "is not a Debian version"),
])
def test_list_errors(tmp_path, line, message):
    with pytest.raises(ValueError, match=message):
        parse_list(_list(tmp_path / "list.txt", line))


def test_list_format(tmp_path):
    pins = parse_list(_list(tmp_path / "list.txt", "zlib1g=1:1.2.13.dfsg-1  # comment", "", "libc6:arm64=2.36-9"))
    assert pins == [Pin("zlib1g", "1:1.2.13.dfsg-1", "amd64"), Pin("libc6", "2.36-9", "arm64")]
    with pytest.raises(ValueError, match=r"list.txt:4: libc6:amd64 is already pinned on line 3"):
        parse_list(_list(tmp_path / "list.txt", "libc6=1.0", "libc6:amd64=1.1"))


def test_apt_mirrors_from_deb822_and_one_line(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert apt_mirrors(tmp_path) == ("http://mirror.example/debian", "http://mirror.example/debian-security")
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] https://other.example/debian/ bookworm main\n")
    assert apt_mirrors(tmp_path) == ("https://other.example/debian", None)
    assert apt_mirrors(tmp_path / "none") == ("https://deb.debian.org/debian", None)


def test_deb_reader_counts_and_limits(tmp_path, binaries):
    path = tmp_path / "x.deb"
    path.write_bytes(make_deb("x", "1", {"usr/bin/prog": binaries["prog"], "usr/lib/libx.so.1": binaries["lib"],
                                         "usr/share/x.txt": b"text"}))
    skipped = Counter()
    found = dict(deb_elf_files(str(path), skipped))
    assert sorted(found) == ["/usr/bin/prog", "/usr/lib/libx.so.1"] and found["/usr/bin/prog"] == binaries["prog"]
    assert skipped == {"not ELF": 1}
    skipped = Counter()
    limit = min(len(binaries["prog"]), len(binaries["lib"])) - 1
    assert list(deb_elf_files(str(path), skipped, max_member_bytes=limit)) == []
    assert skipped == {"over size limit": 2, "not ELF": 1}
    zst = tmp_path / "z.deb"
    zst.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.zst", b"x")]))
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(DebError, match="install the zstandard package"):
            list(deb_elf_files(str(zst)))


def _mirror_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/dists/bookworm/Release", timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.network
def test_real_mirror_small_build(tmp_path):
    url = apt_mirrors()[0]
    if not _mirror_reachable(url):
        pytest.skip(f"{url} is not reachable within 3 s")
    pins = [pin for pin in parse_list(ROOT / "corpora" / "debian-bookworm-small.txt")
            if pin.name in ("zlib1g", "libyaml-0-2") or (pin.name == "liblz4-1")][:3]
    assert len(pins) == 3
    manifest = build_debian_corpus(tmp_path / "corpus", pins, OPTIONS, workers=1, mirror=url,
                                   cache_dir=tmp_path / "cache", progress=False)
    assert manifest["failed_packages"] == {} and manifest["counts"]["functions"] > 100
    assert verify_corpus(tmp_path / "corpus", log=lambda line: None) == []
