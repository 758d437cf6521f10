#!/usr/bin/env bash
# Function-pairs dataset for the function-search (binary code similarity) fine-tuning experiment:
# the same C function compiled by gcc at -O0, -O1, -O2 and -O3, from ~19 real C libraries
# taken as Debian bookworm source packages (`apt-get source`).
#
#   experiments/similarity_data.sh OUTPUT [SRC_DIR]
#
# OUTPUT   the pairs dataset (train/ validation/ test/ manifest.json), see docs/pairs.md
# SRC_DIR  where the Debian source packages are downloaded and unpacked (default: ~/src/similarity);
#          SRC_DIR/stage/ receives one trimmed copy per project (see "Staging" below)
#
# Environment: SEED (project split seed, default 182), WORKERS (parallel compilations, default 2),
# LEVELS (default O0,O1,O2,O3), COMPILERS (default gcc; gcc,clang needs the clang package),
# STAGE_ONLY=1 (download and stage, no build).
#
# Runs on Debian bookworm with gcc, dpkg-dev and the undertale package installed. Downloading needs
# apt access to deb.debian.org (a deb-src entry is added for the run, as root, and removed again);
# packages already unpacked in SRC_DIR are not downloaded again, and a second run with nothing
# changed reuses OUTPUT (the builder's fingerprint covers the staged files' paths, sizes, mtimes).
#
# Staging. The pairs builder compiles each .c file on its own with the SAME --cflags for every
# project: `gcc CFLAGS -O<level> -c -I<file's dir> -I<project root> FILE` run in the project root.
# Real projects need per-project configuration (a generated config.h, -I<include dir>, -D...),
# so each project is staged as SRC_DIR/stage/<name>/ with:
#   - only the library's own sources (no tests, fuzzers, examples, command-line tools, bundled
#     test frameworks such as cJSON's unity), so the dataset is library code;
#   - public include directories copied to the project root, so that -I<project root> finds them;
#   - the headers the project's build system would generate (config.h, ...), written here;
#   - `pairs_prelude.h`: the project's defines (what its Makefile passes as -D...). The global flag
#     `-include pairs_prelude.h` makes gcc read it first; gcc looks for an -include file in the
#     working directory first, and the builder runs gcc in the project root, so each project gets
#     its own prelude;
#   - `.included/`: .c files that are only #included by another .c file (tables, templates). The
#     builder skips hidden directories, and the global `-I.included` lets the #include find them.
# Every staged file keeps its original mtime and generated files get a fixed one, so reruns reuse.
#
# The split is by project (--split 0.7,0.15,0.15 of 19 projects = 13/3/3). The builder has no
# explicit project->split option: the seed was chosen so that validation and test each hold three
# projects with hundreds of complete groups (see the printed table at the end).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUTPUT [SRC_DIR]" >&2
    exit 2
fi
OUTPUT=$(realpath -m "$1")
SRC=$(realpath -m "${2:-$HOME/src/similarity}")
SEED=${SEED:-182}
WORKERS=${WORKERS:-2}
LEVELS=${LEVELS:-O0,O1,O2,O3}
COMPILERS=${COMPILERS:-gcc}
PYTHON=${PYTHON:-python3}
STAGE=$SRC/stage
# the undertale package of this checkout (also when it is not installed, or installed from elsewhere)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
FIXED_MTIME=2000-01-01T00:00:00Z

# Debian source package names (bookworm versions in comments).
PACKAGES=(
    bzip2        # 1.0.8
    cjson        # 1.7.15
    jansson      # 2.14
    libmd        # 1.0.4
    libyaml      # 0.2.5
    lz4          # 1.9.4
    lzo2         # 2.10
    xxhash       # 0.8.1
    zlib         # 1.2.13.dfsg
    lua5.4       # 5.4.4
    expat        # 2.5.0
    cmark        # 0.30.2
    libonig      # 6.9.8
    pcre2        # 10.42
    brotli       # 1.0.9
    libzstd      # 1.5.4+dfsg2
    libtommath   # 1.2.0
    libtomcrypt  # 1.18.2
    libdeflate   # 1.14
)

# ---------------------------------------------------------------------------------------------
# 1. Download and unpack (skipped for packages already unpacked in SRC_DIR)

# The unpacked directory of a source package: <package>-<upstream version>/
unpacked() {
    local found
    found=$(find "$SRC" -maxdepth 1 -type d -name "$1-[0-9]*" | sort | tail -n 1)
    [ -n "$found" ] && echo "$found"
}

mkdir -p "$SRC"
missing=()
for package in "${PACKAGES[@]}"; do
    unpacked "$package" >/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "downloading: ${missing[*]}"
    added_sources=
    if ! apt-get source --download-only --print-uris "${missing[0]}" >/dev/null 2>&1; then
        # no deb-src entry yet: add one for this run (needs root), removed again on exit
        added_sources=/etc/apt/sources.list.d/similarity-src.sources
        cat >"$added_sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        trap 'rm -f "$added_sources"; apt-get update -qq || true' EXIT
        apt-get update -qq
    fi
    command -v dpkg-source >/dev/null || apt-get install -y -qq dpkg-dev
    (cd "$SRC" && for package in "${missing[@]}"; do apt-get source -qq "$package"; done)
fi

for package in "${PACKAGES[@]}"; do
    unpacked "$package" >/dev/null || { echo "error: $package did not unpack in $SRC" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# 2. Staging: one trimmed, configured copy per project in SRC_DIR/stage/<name>

rm -rf "$STAGE"
mkdir -p "$STAGE"

# copy NAME FROM PATTERN... : copy files (globs relative to FROM) into stage/NAME, keeping their
# relative paths and mtimes
copy() {
    local name=$1 from=$2
    shift 2
    mkdir -p "$STAGE/$name"
    (cd "$from" && shopt -s nullglob && cp -pR --parents $* "$STAGE/$name/")
}

# copy_to NAME FROM DEST PATTERN... : copy files into stage/NAME/DEST (flattened), keeping mtimes
copy_to() {
    local name=$1 from=$2 dest=$3
    shift 3
    mkdir -p "$STAGE/$name/$dest"
    (cd "$from" && shopt -s nullglob && cp -p $* "$STAGE/$name/$dest/")
}

# generated NAME FILE < text : a generated file with a fixed mtime (so that reruns reuse OUTPUT)
generated() {
    mkdir -p "$(dirname "$STAGE/$1/$2")"
    cat >"$STAGE/$1/$2"
    touch -d "$FIXED_MTIME" "$STAGE/$1/$2"
}

# prelude NAME < defines : the project's own defines, read before each of its files
prelude() {
    generated "$1" pairs_prelude.h
}

# included_only NAME FILE... : move .c files that are only #included into stage/NAME/.included/
included_only() {
    local name=$1
    shift
    mkdir -p "$STAGE/$name/.included"
    for file in "$@"; do mv "$STAGE/$name/$file" "$STAGE/$name/.included/"; done
}

# bzip2: the library (blocksort ... bzlib) and the bzip2/bzip2recover programs' code (the library
# alone is small); left out: the test/demo programs dlltest, mk251, spewG, unzcrash. No defines.
d=$(unpacked bzip2)
copy bzip2 "$d" blocksort.c huffman.c crctable.c randtable.c compress.c decompress.c bzlib.c \
    bzip2.c bzip2recover.c bzlib.h bzlib_private.h
prelude bzip2 </dev/null

# cjson: only cJSON.c and cJSON_Utils.c; the tree's tests/unity and fuzzing folders would
# dwarf the library. No defines.
d=$(unpacked cjson)
copy cjson "$d" cJSON.c cJSON_Utils.c cJSON.h cJSON_Utils.h
prelude cjson </dev/null

# jansson: src/ only. Its build generates jansson_config.h (from jansson_config.h.in) and
# jansson_private_config.h (cmake/autoconf checks, read under HAVE_CONFIG_H): written here with
# the values configure finds on Linux/glibc.
d=$(unpacked jansson)
copy_to jansson "$d/src" . '*.c' '*.h'
sed -e 's/@json_inline@/inline/' -e 's/@json_have_long_long@/1/' -e 's/@json_have_localeconv@/1/' \
    -e 's/@json_have_atomic_builtins@/1/' -e 's/@json_have_sync_builtins@/1/' \
    "$d/src/jansson_config.h.in" | generated jansson jansson_config.h
generated jansson jansson_private_config.h <<'EOF'
#define HAVE_ENDIAN_H 1
#define HAVE_FCNTL_H 1
#define HAVE_SCHED_H 1
#define HAVE_UNISTD_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_STDINT_H 1
#define HAVE_CLOSE 1
#define HAVE_GETPID 1
#define HAVE_GETTIMEOFDAY 1
#define HAVE_OPEN 1
#define HAVE_READ 1
#define HAVE_SCHED_YIELD 1
#define HAVE_SYNC_BUILTINS 1
#define HAVE_ATOMIC_BUILTINS 1
#define HAVE_LOCALE_H 1
#define HAVE_SETLOCALE 1
#define HAVE_INT32_T 1
#define HAVE_UINT32_T 1
#define HAVE_UINT16_T 1
#define HAVE_UINT8_T 1
#define HAVE_SSIZE_T 1
#define USE_URANDOM 1
#define INITIAL_HASHTABLE_ORDER 3
EOF
prelude jansson <<'EOF'
#define HAVE_CONFIG_H 1
EOF

# libmd: src/ plus the public headers of include/ at the root (its files #include <md5.h>).
# Every file includes <config.h> (autoconf): written here. helper.c is the template from which
# the shipped md5hl.c, sha1hl.c, ... were generated (sed hashinc -> md5.h): left out.
d=$(unpacked libmd)
copy_to libmd "$d/src" . '*.c' '*.h'
rm -f "$STAGE/libmd/helper.c"
copy_to libmd "$d/include" . '*.h'
generated libmd config.h <<'EOF'
#define HAVE_DLFCN_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDIO_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define HAVE_WCHAR_H 1
#define STDC_HEADERS 1
#define PACKAGE "libmd"
#define VERSION "1.0.4"
EOF
prelude libmd </dev/null

# libyaml: src/ plus include/yaml.h. yaml_private.h reads config.h under HAVE_CONFIG_H for the
# YAML_VERSION_* macros (autoconf): written here.
d=$(unpacked libyaml)
copy_to libyaml "$d/src" . '*.c' '*.h'
copy_to libyaml "$d/include" . yaml.h
generated libyaml config.h <<'EOF'
#define YAML_VERSION_MAJOR 0
#define YAML_VERSION_MINOR 2
#define YAML_VERSION_PATCH 5
#define YAML_VERSION_STRING "0.2.5"
EOF
prelude libyaml <<'EOF'
#define HAVE_CONFIG_H 1
EOF

# lz4: lib/ only (not the programs, tests, examples, ossfuzz). No defines.
d=$(unpacked lz4)
copy_to lz4 "$d/lib" . '*.c' '*.h'
prelude lz4 </dev/null

# lzo2: src/ (the many lzo1*/lzo2a compressors) with include/lzo/ copied to the root, since
# src/lzo_conf.h includes <lzo/lzoconf.h> (the build passes -Iinclude). minilzo/, examples/,
# lzotest/ and asm/ are left out. No defines (lzodefs.h detects the platform).
d=$(unpacked lzo2)
copy_to lzo2 "$d/src" . '*.c' '*.h' '*.ch'
copy_to lzo2 "$d/include/lzo" lzo '*.h'
prelude lzo2 </dev/null

# xxhash: xxhash.c (the whole library, mostly XXH_INLINE functions) and xxh_x86dispatch.c;
# not cli/ nor tests/. No defines.
d=$(unpacked xxhash)
copy xxhash "$d" xxhash.c xxhash.h xxh3.h xxh_x86dispatch.c xxh_x86dispatch.h
prelude xxhash </dev/null

# zlib: the library files at the top; not contrib/, examples/, test/. Its ./configure on Linux
# turns on unistd.h and the 64-bit file offset functions: the same defines here.
d=$(unpacked zlib)
copy zlib "$d" adler32.c compress.c crc32.c deflate.c gzclose.c gzlib.c gzread.c gzwrite.c \
    infback.c inffast.c inflate.c inftrees.c trees.c uncompr.c zutil.c '*.h'
prelude zlib <<'EOF'
#define HAVE_UNISTD_H 1
#define HAVE_STDARG_H 1
#define _LARGEFILE64_SOURCE 1
EOF

# lua5.4: src/ without the lua.c and luac.c programs. Debian and `make linux` build with
# -DLUA_USE_LINUX (POSIX functions, dlopen); -DLUA_COMPAT_5_3 as Debian does. Debian's patched
# luaconf.h includes lua5.4-deb-multiarch.h (generated by debian/rules: DEB_HOST_MULTIARCH, for
# the module search path): written here.
d=$(unpacked lua5.4)
copy_to lua5.4 "$d/src" . '*.c' '*.h'
rm -f "$STAGE/lua5.4/lua.c" "$STAGE/lua5.4/luac.c"
generated lua5.4 lua5.4-deb-multiarch.h <<EOF
#ifndef _LUA_DEB_MULTIARCH_
#define _LUA_DEB_MULTIARCH_
#define DEB_HOST_MULTIARCH "$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
#endif
EOF
prelude lua5.4 <<'EOF'
#define LUA_USE_LINUX 1
#define LUA_COMPAT_5_3 1
EOF

# expat: expat/lib/ only (not xmlwf, tests, fuzz, examples). Every file includes <expat_config.h>,
# generated by configure/cmake: written here with the Linux values (XML_DTD, XML_NS and
# XML_CONTEXT_BYTES=1024 as in the default build). xmltok_impl.c and xmltok_ns.c are templates
# #included by xmltok.c: moved to .included/.
d=$(unpacked expat)
copy_to expat "$d/expat/lib" . '*.c' '*.h'
included_only expat xmltok_impl.c xmltok_ns.c
generated expat expat_config.h <<'EOF'
#ifndef EXPAT_CONFIG_H
#define EXPAT_CONFIG_H 1
#define BYTEORDER 1234
#define HAVE_DLFCN_H 1
#define HAVE_FCNTL_H 1
#define HAVE_GETPAGESIZE 1
#define HAVE_GETRANDOM 1
#define HAVE_INTTYPES_H 1
#define HAVE_MMAP 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_SYSCALL_GETRANDOM 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define PACKAGE "expat"
#define PACKAGE_NAME "expat"
#define PACKAGE_VERSION "2.5.0"
#define STDC_HEADERS 1
#define XML_CONTEXT_BYTES 1024
#define XML_DEV_URANDOM 1
#define XML_DTD 1
#define XML_NS 1
#endif
EOF
prelude expat </dev/null

# cmark: src/ without main.c (the command-line program). cmake generates config.h,
# cmark_export.h and cmark_version.h: written here (static library: CMARK_EXPORT is empty).
d=$(unpacked cmark)
copy_to cmark "$d/src" . '*.c' '*.h' '*.inc'
rm -f "$STAGE/cmark/main.c"
generated cmark config.h <<'EOF'
#ifndef CMARK_CONFIG_H
#define CMARK_CONFIG_H
#define HAVE_STDBOOL_H
#include <stdbool.h>
#define HAVE___BUILTIN_EXPECT
#define HAVE___ATTRIBUTE__
#define CMARK_ATTRIBUTE(list) __attribute__ (list)
#ifndef CMARK_INLINE
#define CMARK_INLINE inline
#endif
#endif
EOF
generated cmark cmark_export.h <<'EOF'
#ifndef CMARK_EXPORT_H
#define CMARK_EXPORT_H
#define CMARK_EXPORT
#define CMARK_NO_EXPORT
#define CMARK_DEPRECATED __attribute__ ((__deprecated__))
#define CMARK_DEPRECATED_EXPORT CMARK_EXPORT CMARK_DEPRECATED
#define CMARK_DEPRECATED_NO_EXPORT CMARK_NO_EXPORT CMARK_DEPRECATED
#endif
EOF
generated cmark cmark_version.h <<'EOF'
#ifndef CMARK_VERSION_H
#define CMARK_VERSION_H
#define CMARK_VERSION ((0 << 16) | (30 << 8) | 2)
#define CMARK_VERSION_STRING "0.30.2"
#endif
EOF
prelude cmark </dev/null

# libonig (oniguruma): the files of src/Makefile.am's libonig_la_SOURCES plus the POSIX API
# (regposix.c, regposerr.c; built by default). The unicode_*_data.c tables are #included by
# unicode.c: moved to .included/. koi8.c and mktable.c are not built upstream: left out.
# regint.h includes config.h (autoconf): written here.
d=$(unpacked libonig)
copy_to libonig "$d/src" . '*.c' '*.h'
rm -f "$STAGE/libonig/koi8.c" "$STAGE/libonig/mktable.c"
included_only libonig unicode_fold_data.c unicode_property_data.c unicode_property_data_posix.c \
    unicode_egcb_data.c unicode_wb_data.c
generated libonig config.h <<'EOF'
#define HAVE_ALLOCA 1
#define HAVE_ALLOCA_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_SYS_TIMES_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define PACKAGE "onig"
#define PACKAGE_VERSION "6.9.8"
#define SIZEOF_INT 4
#define SIZEOF_LONG 8
#define SIZEOF_LONG_LONG 8
#define SIZEOF_VOIDP 8
#define STDC_HEADERS 1
#define VERSION "6.9.8"
EOF
prelude libonig </dev/null

# pcre2: the 8-bit library (libpcre2-8) as its Makefile lists it; not pcre2test, pcre2grep,
# pcre2demo, the fuzzer, the JIT test, dftables. config.h and pcre2.h come from the shipped
# *.generic files, pcre2_chartables.c from pcre2_chartables.c.dist (what the build does).
# Defines: HAVE_CONFIG_H, PCRE2_CODE_UNIT_WIDTH=8 and SUPPORT_UNICODE (on by default in
# configure). No JIT (sljit would add its code generator; Debian enables it). pcre2_jit_match.c,
# pcre2_jit_misc.c, pcre2_ucptables.c and pcre2_printint.c are #included by other files.
d=$(unpacked pcre2)
copy_to pcre2 "$d/src" . pcre2_auto_possess.c pcre2_compile.c pcre2_config.c pcre2_context.c \
    pcre2_convert.c pcre2_dfa_match.c pcre2_error.c pcre2_extuni.c pcre2_find_bracket.c \
    pcre2_jit_compile.c pcre2_maketables.c pcre2_match.c pcre2_match_data.c pcre2_newline.c \
    pcre2_ord2utf.c pcre2_pattern_info.c pcre2_script_run.c pcre2_serialize.c \
    pcre2_string_utils.c pcre2_study.c pcre2_substitute.c pcre2_substring.c pcre2_tables.c \
    pcre2_ucd.c pcre2_valid_utf.c pcre2_xclass.c pcre2_jit_match.c pcre2_jit_misc.c \
    pcre2_ucptables.c pcre2_printint.c pcre2_internal.h pcre2_intmodedep.h pcre2_ucp.h \
    pcre2_jit_neon_inc.h pcre2_jit_simd_inc.h
included_only pcre2 pcre2_jit_match.c pcre2_jit_misc.c pcre2_ucptables.c pcre2_printint.c
generated pcre2 config.h <"$d/src/config.h.generic"
generated pcre2 pcre2.h <"$d/src/pcre2.h.generic"
generated pcre2 pcre2_chartables.c <"$d/src/pcre2_chartables.c.dist"
prelude pcre2 <<'EOF'
#define HAVE_CONFIG_H 1
#define PCRE2_CODE_UNIT_WIDTH 8
#define SUPPORT_UNICODE 1
EOF

# brotli: c/common, c/dec, c/enc (not c/tools, the program), with c/include/brotli/ copied to
# the root: the files include <brotli/encode.h> (the build passes -Ic/include). No defines.
d=$(unpacked brotli)
copy brotli "$d/c" 'common/*.c' 'common/*.h' 'dec/*.c' 'dec/*.h' 'enc/*.c' 'enc/*.h'
copy_to brotli "$d/c/include/brotli" brotli '*.h'
prelude brotli </dev/null

# libzstd: lib/common, compress, decompress, dictBuilder and the public headers at lib/ (not
# legacy/, deprecated/, programs, tests, contrib, zlibWrapper). Debian builds the library with
# -DZSTD_MULTITHREAD (pthreads); the x86-64 Huffman assembly (.S) is not compiled here, only
# referenced.
d=$(unpacked libzstd)
copy libzstd "$d/lib" '*.h' 'common/*.c' 'common/*.h' 'compress/*.c' 'compress/*.h' \
    'decompress/*.c' 'decompress/*.h' 'dictBuilder/*.c' 'dictBuilder/*.h'
prelude libzstd <<'EOF'
#define ZSTD_MULTITHREAD 1
EOF

# libtommath: the bn_*.c files at the top (one function per file) and its headers; not demo/,
# etc/, mtest/. No defines.
d=$(unpacked libtommath)
copy libtommath "$d" 'bn_*.c' '*.h'
prelude libtommath </dev/null

# libtomcrypt: src/ except src/math (the bignum descriptors) and src/pk (public-key code needing
# a bignum library: Debian builds it with -DLTM_DESC against libtommath), with src/headers/ copied
# to the root. Its makefile passes -DLTC_SOURCE. The *_tab.c tables #included by aes.c,
# safer.c, ... compile to no functions on their own and are harmless.
d=$(unpacked libtomcrypt)
copy libtomcrypt "$d/src" 'ciphers' 'encauth' 'hashes' 'mac' 'misc' 'modes' 'prngs' 'stream'
copy_to libtomcrypt "$d/src/headers" . '*.h'
prelude libtomcrypt <<'EOF'
#define LTC_SOURCE 1
EOF

# libdeflate: lib/ (with its x86 and arm CPU-feature files) and the headers at the top that lib/
# includes as "../libdeflate.h" and "../common_defs.h"; not programs/ nor scripts/. No defines.
d=$(unpacked libdeflate)
copy libdeflate "$d" libdeflate.h common_defs.h 'lib/*.c' 'lib/*.h' 'lib/x86/*' 'lib/arm/*'
prelude libdeflate </dev/null

if [ -n "${STAGE_ONLY:-}" ]; then
    echo "staged in $STAGE (STAGE_ONLY set: no build)"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 3. Build the pairs (one compilation per .c file, level and compiler; see docs/pairs.md)

PROJECTS=()
for name in "$STAGE"/*/; do PROJECTS+=("${name%/}"); done
echo "projects: ${#PROJECTS[@]} in $STAGE"

"$PYTHON" -m undertale.data pairs "$OUTPUT" "${PROJECTS[@]}" \
    --levels "$LEVELS" --compilers "$COMPILERS" --split 0.7,0.15,0.15 --seed "$SEED" \
    --workers "$WORKERS" --cflags="-include pairs_prelude.h -I.included"

# ---------------------------------------------------------------------------------------------
# 4. Rows and complete groups (present at every level) per split and project

"$PYTHON" - "$OUTPUT" <<'EOF'
import collections
import json
import sys

from undertale.data.pairs import read_pairs

output = sys.argv[1]
manifest = json.load(open(f"{output}/manifest.json"))
failed = collections.Counter(item["project"] for item in manifest["failed"])
print(f"{'split':<11} {'project':<12} {'rows':>7} {'groups':>7} {'complete':>8} {'complete rows':>13} {'failed':>6}")
for split in ("train", "validation", "test"):
    everything = read_pairs(output, split, columns=["project", "group"])
    complete = read_pairs(output, split, columns=["project", "group"], complete=True)
    rows = collections.Counter(everything.column("project").to_pylist())
    groups = collections.Counter(p for p, _ in set(zip(everything.column("project").to_pylist(), everything.column("group").to_pylist())))
    crows = collections.Counter(complete.column("project").to_pylist())
    cgroups = collections.Counter(p for p, _ in set(zip(complete.column("project").to_pylist(), complete.column("group").to_pylist())))
    for project in sorted(rows):
        print(f"{split:<11} {project:<12} {rows[project]:>7} {groups[project]:>7} {cgroups[project]:>8} {crows[project]:>13} {failed[project]:>6}")
    print(f"{split:<11} {'(all)':<12} {sum(rows.values()):>7} {sum(groups.values()):>7} {sum(cgroups.values()):>8} {sum(crows.values()):>13}")
print(f"build: {manifest['seconds']} s; failed compilations: {manifest['counts']['failed_compilations']}")
EOF
