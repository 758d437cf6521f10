"""Staging pinned Debian source packages as a dataset description says (undertale.data.pairs.stage).

A tiny Debian archive (a Sources.xz index, .dsc files, orig and debian tarballs) is served from 127.0.0.1;
no test reaches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

from undertale.data.__main__ import main
from undertale.data.pairs.sources import parse_sources, unpacked_name, upstream_version
from undertale.data.pairs.stage import (
    COPY_KEYS, DATASET_KEYS, DERIVED_KEYS, FIXED_MTIME, PROJECT_KEYS, load_dataset, pairs_command, stage,
)

REPO = Path(__file__).resolve().parents[1]
SIMILARITY = REPO / "experiments" / "datasets" / "similarity"
TARBALL_MTIME = 1_234_567_890
HAS_DPKG_SOURCE = shutil.which("dpkg-source") is not None

A_C = b"#include \"a.h\"\nint a(void) { return 1; }\n"
PATCH = b"""Description: return 2
--- a/src/a.c
+++ b/src/a.c
@@ -1,2 +1,2 @@
 #include "a.h"
-int a(void) { return 1; }
+int a(void) { return 2; }
"""


def _tar(path: Path, files: dict[str, bytes], compression: str) -> None:
    with tarfile.open(path, f"w:{compression}") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TARBALL_MTIME, 0o644
            archive.addfile(info, io.BytesIO(data))


def _sums(paths: list[Path], algorithm: str) -> str:
    return "".join(f"\n {hashlib.new(algorithm, p.read_bytes()).hexdigest()} {p.stat().st_size} {p.name}"
                   for p in paths)


def _package(pool: Path, name: str, version: str, orig: dict[str, bytes], debian: dict[str, bytes]) -> str:
    """Write a 3.0 (quilt) source package into ``pool``; returns its Sources paragraph."""
    upstream = upstream_version(version)
    plain = version.split(":", 1)[-1]
    pool.mkdir(parents=True, exist_ok=True)
    orig_tar = pool / f"{name}_{upstream}.orig.tar.gz"
    _tar(orig_tar, {f"{name}-{upstream}/{path}": data for path, data in orig.items()}, "gz")
    debian_tar = pool / f"{name}_{plain}.debian.tar.xz"
    files = {"debian/source/format": b"3.0 (quilt)\n", **{f"debian/{p}": d for p, d in debian.items()}}
    _tar(debian_tar, files, "xz")
    tarballs = [orig_tar, debian_tar]
    dsc = pool / f"{name}_{plain}.dsc"
    dsc.write_text(
        f"Format: 3.0 (quilt)\nSource: {name}\nBinary: {name}\nArchitecture: any\nVersion: {version}\n"
        f"Maintainer: Nobody <nobody@example.org>\nStandards-Version: 4.6.2\n"
        f"Checksums-Sha256:{_sums(tarballs, 'sha256')}\nFiles:{_sums(tarballs, 'md5')}\n"
    )
    return (f"Package: {name}\nVersion: {version}\nFormat: 3.0 (quilt)\nDirectory: pool/main/{name[0]}/{name}\n"
            f"Checksums-Sha256:{_sums([dsc, *tarballs], 'sha256')}\n")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        _Handler.requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A mirror on 127.0.0.1 with ``tiny`` 1.0-1 (one Debian patch) and ``plain`` 1:2.0-3 (no patches)."""
    root = tmp_path_factory.mktemp("mirror")
    debian = root / "debian"
    paragraphs = [
        _package(debian / "pool/main/t/tiny", "tiny", "1.0-1", {
            "src/a.c": A_C, "src/a.h": b"int a(void);\n", "src/b.c": b"int b(void) { return 0; }\n",
            "src/table.c": b"static const int table[] = {1, 2};\n", "src/main.c": b"int main(void) { return 0; }\n",
            "include/tiny/api.h": b"#define TINY 1\n", "tests/test.c": b"int test;\n",
            "version.h.in": b"#define V @V@ @V@\n#define W @W@\n",
        }, {"patches/series": b"return-2.patch\n", "patches/return-2.patch": PATCH}),
        _package(debian / "pool/main/p/plain", "plain", "1:2.0-3", {"plain.c": b"int plain;\n", "x.h": b""}, {}),
    ]
    index = debian / "dists/bookworm/main/source"
    index.mkdir(parents=True)
    (index / "Sources.xz").write_bytes(lzma.compress("\n".join(paragraphs).encode()))
    handler = lambda *args, **kwargs: _Handler(*args, directory=str(root), **kwargs)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "mirror": f"http://127.0.0.1:{server.server_address[1]}/debian"}
    server.shutdown()
    server.server_close()


def _dataset(path: Path, packages=("tiny=1.0-1", "plain=1:2.0-3"), tiny: str | None = None) -> Path:
    (path / "projects" / "tiny").mkdir(parents=True, exist_ok=True)
    (path / "dataset.yaml").write_text(yaml.safe_dump({
        "suite": "bookworm", "packages": list(packages), "validation": ["plain"], "test": ["tiny"],
        "levels": ["O0", "O2"], "compilers": ["gcc"], "cflags": "-include pairs_prelude.h -I.included",
    }))
    (path / "projects" / "tiny.yaml").write_text(tiny if tiny is not None else (
        "copy:\n"
        "  - {from: src, into: ., files: ['*.c', '*.h']}\n"
        "  - {from: include/tiny, into: tiny, files: ['*.h']}\n"
        "remove: [main.c]\n"
        "included: [table.c]\n"
        "generated: [config.h]\n"
        "derived:\n  - {to: version.h, from: version.h.in, replace: [['@V@', '7'], ['@W@', '8']]}\n"
        "defines:\n  HAVE_CONFIG_H: 1\n  PREFIX: tiny_\n"
    ))
    (path / "projects" / "tiny" / "config.h").write_text("#define HAVE_STDINT_H 1\n")
    (path / "projects" / "plain.yaml").write_text("copy:\n  - files: ['*.c', '*.h']\n")
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.skipif(not HAS_DPKG_SOURCE, reason="dpkg-source (dpkg-dev) not installed")
def test_stage_downloads_unpacks_and_stages(archive, tmp_path):
    dataset = load_dataset(_dataset(tmp_path / "dataset"))
    src = tmp_path / "src"
    lines: list[str] = []
    stage_dir = stage(dataset, src, mirror=archive["mirror"], log=lines.append)
    tiny, plain = stage_dir / "tiny", stage_dir / "plain"
    assert _files(tiny) == [".included/table.c", "a.c", "a.h", "b.c", "config.h", "pairs_prelude.h", "tiny/api.h",
                            "version.h"]
    assert _files(plain) == ["pairs_prelude.h", "plain.c", "x.h"]
    assert (tiny / "a.c").read_text().endswith("return 2; }\n")  # the Debian patch applied
    assert (tiny / "version.h").read_text() == "#define V 7 @V@\n#define W 8\n"  # first match per line, as sed
    assert (tiny / "pairs_prelude.h").read_text() == "#define HAVE_CONFIG_H 1\n#define PREFIX tiny_\n"
    assert (plain / "pairs_prelude.h").read_bytes() == b""
    assert (tiny / "config.h").read_text() == "#define HAVE_STDINT_H 1\n"
    for name in ("b.c", "a.h", "tiny/api.h", ".included/table.c"):  # copied files keep the tarball's mtime
        assert (tiny / name).stat().st_mtime == TARBALL_MTIME
    for name in ("config.h", "version.h", "pairs_prelude.h"):  # generated ones get the fixed one
        assert (tiny / name).stat().st_mtime == FIXED_MTIME
    assert (src / unpacked_name("plain", "1:2.0-3")).name == "plain-2.0"
    assert any(line.startswith("tiny 1.0-1: 3 files") for line in lines)
    # a rerun downloads nothing, reuses the unpacked packages and stages the same tree
    _Handler.requests.clear()
    before = {name: (tiny / name).read_bytes() for name in _files(tiny)}
    lines.clear()
    stage(dataset, src, mirror=archive["mirror"], log=lines.append)
    assert _Handler.requests == []
    assert any("(reused)" in line for line in lines)
    assert {name: (tiny / name).read_bytes() for name in _files(tiny)} == before
    command = pairs_command(dataset, stage_dir, "OUT", workers=2)
    assert command[4:7] == ["OUT", str(plain), str(tiny)]
    assert command[-5:] == ["--test-projects", "tiny", "--workers", "2",
                            "--cflags=-include pairs_prelude.h -I.included"]


def test_python_unpack_without_dpkg_source(archive, tmp_path):
    dataset = load_dataset(_dataset(tmp_path / "dataset", packages=("tiny=1.0-1", "plain=1:2.0-3")))
    dataset.packages.pop("tiny"), dataset.projects.pop("tiny")
    stage_dir = stage(dataset, tmp_path / "src", mirror=archive["mirror"], log=lambda line: None, dpkg_source=None)
    assert _files(stage_dir / "plain") == ["pairs_prelude.h", "plain.c", "x.h"]
    assert (stage_dir / "plain" / "plain.c").stat().st_mtime == TARBALL_MTIME
    # a package with Debian patches needs dpkg-source: one line, nothing left half unpacked
    dataset = load_dataset(tmp_path / "dataset")
    with pytest.raises(ValueError, match="tiny: has Debian patches: dpkg-source is needed"):
        stage(dataset, tmp_path / "src", mirror=archive["mirror"], log=lambda line: None, dpkg_source=None)
    assert not (tmp_path / "src" / "tiny-1.0").exists()
    assert not [p for p in (tmp_path / "src").iterdir() if p.name.startswith(".unpack-")]


def test_checksum_mismatch_is_one_line_and_exit_2(archive, tmp_path):
    """Run as a subprocess: a file that does not match the index's SHA256."""
    mirror = tmp_path / "mirror"
    shutil.copytree(archive["root"], mirror)
    tarball = mirror / "debian/pool/main/p/plain/plain_2.0.orig.tar.gz"
    tarball.write_bytes(bytes(byte ^ 0xFF for byte in tarball.read_bytes()))  # the same size, other bytes
    handler = lambda *args, **kwargs: _Handler(*args, directory=str(mirror), **kwargs)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dataset = _dataset(tmp_path / "dataset", packages=("plain=1:2.0-3", "tiny=1.0-1"))
        result = subprocess.run(
            [sys.executable, "-m", "undertale.data", "stage", str(dataset), str(tmp_path / "src"),
             "--mirror", f"http://127.0.0.1:{server.server_address[1]}/debian"],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: plain_2.0.orig.tar.gz: checksum mismatch")
    assert not (tmp_path / "src" / "plain_2.0.orig.tar.gz").exists()
    assert not (tmp_path / "src" / "plain_2.0.orig.tar.gz.part").exists()


def test_missing_pinned_version_names_the_mirrors(archive, tmp_path, capsys):
    dataset = _dataset(tmp_path / "dataset", packages=("tiny=1.1-1", "plain=1:2.0-3"))
    assert main(["stage", str(dataset), str(tmp_path / "src"), "--mirror", archive["mirror"]]) == 2
    error = capsys.readouterr().err
    assert error == f"error: tiny: pinned version 1.1-1 not found: {archive['mirror']} bookworm has tiny 1.0-1\n"


def test_download_failure_is_one_line(tmp_path, capsys):
    dataset = _dataset(tmp_path / "dataset")
    assert main(["stage", str(dataset), str(tmp_path / "src"), "--mirror", "http://127.0.0.1:9/debian"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: mirror unreachable: http://127.0.0.1:9/debian/dists/bookworm/main/source/Sources.xz")
    assert error.count("\n") == 1


@pytest.mark.parametrize("change, message", [
    (("projects/tiny.yaml", "kepp: [a.c]\n"), "unknown key 'kepp'"),
    (("projects/tiny.yaml", "copy:\n  - {form: src, files: [a.c]}\n"), "copy #1: unknown key 'form'"),
    (("projects/tiny.yaml", "derived:\n  - {to: v.h, from: v.in, replce: []}\n"), "unknown key 'replce'"),
    (("projects/other.yaml", "copy: []\n"), "unknown project: other is not a package"),
    (("projects/tiny.yaml", "generated: [missing.h]\n"), "generated file"),
    (("dataset.yaml", "packages: [tiny]\n"), "expected NAME=VERSION"),
    (("dataset.yaml", "packages: [tiny=1.0-1, plain=1:2.0-3]\nflags: -O2\n"), "unknown key 'flags'"),
    (("dataset.yaml", "packages: [tiny=1.0-1, plain=1:2.0-3]\ntest: [nope]\n"), "test: nope is not a package"),
])
def test_bad_description_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    dataset = _dataset(tmp_path / "dataset")
    (dataset / change[0]).write_text(change[1])
    assert main(["stage", str(dataset), str(tmp_path / "src")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error, error
    assert not (tmp_path / "src").exists()  # checked before anything is downloaded


def test_missing_system_header_names_the_package(tmp_path, capsys):
    dataset = _dataset(tmp_path / "dataset")
    text = (dataset / "dataset.yaml").read_text() + "system_headers:\n  no_such_header_xyz.h: libxyz-dev\n"
    (dataset / "dataset.yaml").write_text(text)
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    assert main(["stage", str(dataset), str(tmp_path / "src"), "--build", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: <no_such_header_xyz.h> not found by gcc: install libxyz-dev\n"


def test_parse_sources_and_versions():
    index = parse_sources("Package: a\nVersion: 1:2.0-1+deb12u1\nDirectory: pool/main/a/a\nChecksums-Sha256:\n"
                          " ab 12 a_2.0-1+deb12u1.dsc\n cd 34 a_2.0.orig.tar.gz\n\nPackage: b\nVersion: 3\n")
    assert [f.name for f in index["a"][0].files] == ["a_2.0-1+deb12u1.dsc", "a_2.0.orig.tar.gz"]
    assert index["a"][0].dsc.size == 12 and index["b"][0].files == ()
    assert upstream_version("1:1.2.13.dfsg-1") == "1.2.13.dfsg" and upstream_version("2.10-2") == "2.10"
    assert unpacked_name("libzstd", "1.5.4+dfsg2-5") == "libzstd-1.5.4+dfsg2"


# ---------------------------------------------------------------------------------------------------------
# the similarity experiment's description


def test_similarity_description_parses_with_known_keys_only():
    dataset = load_dataset(SIMILARITY)
    assert len(dataset.projects) == 31
    assert set(dataset.validation) == {"jansson", "libonig", "lz4"}
    assert set(dataset.test) == {"cmark", "libtomcrypt", "libtommath"}
    assert dataset.levels == ["O0", "O1", "O2", "O3"] and dataset.compilers == ["gcc"]
    assert dataset.system_headers == {"zlib.h": "zlib1g-dev", "gmp.h": "libgmp-dev"}
    assert set(yaml.safe_load((SIMILARITY / "dataset.yaml").read_text())) <= DATASET_KEYS
    for path in sorted((SIMILARITY / "projects").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        assert set(data) <= PROJECT_KEYS, path
        assert all(set(item) <= COPY_KEYS for item in data.get("copy", [])), path
        assert all(set(item) <= DERIVED_KEYS for item in data.get("derived", [])), path
        # every file next to it is a generated file it names, and the other way round
        folder = path.with_suffix("")
        on_disk = _files(folder) if folder.is_dir() else []
        assert on_disk == sorted(data.get("generated", [])), path
    assert sorted(p.name for p in (SIMILARITY / "projects").iterdir() if p.is_dir()) == sorted(
        name for name, project in dataset.projects.items() if project.generated)


def test_similarity_description_pins_every_package():
    pins = yaml.safe_load((SIMILARITY / "dataset.yaml").read_text())["packages"]
    assert len(pins) == 31
    for pin in pins:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]*=(\d+:)?[0-9][A-Za-z0-9.+~]*-[A-Za-z0-9.+~]+", pin), pin
    assert "zlib=1:1.2.13.dfsg-1" in pins and "bzip2=1.0.8-5" in pins
