#!/usr/bin/env bash
# Function-pairs dataset for the function-search (binary code similarity) fine-tuning experiment:
# the same C function compiled by gcc at -O0, -O1, -O2 and -O3, from 31 real C libraries
# taken as Debian bookworm source packages (`apt-get source`).
#
#   experiments/similarity_data.sh OUTPUT [SRC_DIR]
#
# OUTPUT   the pairs dataset (train/ validation/ test/ manifest.json), see docs/pairs.md
# SRC_DIR  where the Debian source packages are downloaded and unpacked (default: ~/src/similarity);
#          SRC_DIR/stage/ receives one trimmed copy per project (see "Staging" below)
#
# Environment: PROJECTS (all: the 31 libraries, default; first19: the 19 of the tables recorded before
# 2026-11-28, see docs/results.md), WORKERS (parallel compilations, default 2),
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
# The split is by project and by name (--validation-projects/--test-projects, docs/pairs.md): validation
# jansson, libonig, lz4; test cmark, libtomcrypt, libtommath; every other project is train (13 of the
# first 19, all 12 added after them). Naming them keeps the held-out projects fixed as training projects
# are added (these six are the split that seed 182 of --split 0.7,0.15,0.15 gave the first 19).
#
# Builds with the system's zlib.h (libpng) and gmp.h (nettle): packages zlib1g-dev and libgmp-dev
# (checked before anything is downloaded).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUTPUT [SRC_DIR]" >&2
    exit 2
fi
OUTPUT=$(realpath -m "$1")
SRC=$(realpath -m "${2:-$HOME/src/similarity}")
PROJECTS_SET=${PROJECTS:-all}
VALIDATION_PROJECTS=jansson,libonig,lz4
TEST_PROJECTS=cmark,libtomcrypt,libtommath
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
# Added for more training data (every one of them is in the train split).
MORE_PACKAGES=(
    mbedtls      # 2.28.3
    libwebp      # 1.2.4
    lmdb         # 0.9.24
    utf8proc     # 2.8.0
    giflib       # 5.2.1
    zopfli       # 1.0.3
    libpng1.6    # 1.6.39
    json-c       # 0.16
    xz-utils     # 5.4.1
    nettle       # 3.8.1
    c-ares       # 1.18.1
    opus         # 1.3.1
)
case "$PROJECTS_SET" in
    all) PACKAGES+=("${MORE_PACKAGES[@]}") ;;
    first19) ;;
    *) echo "error: PROJECTS=$PROJECTS_SET: expected all or first19" >&2; exit 2 ;;
esac
# libpng and nettle include the system's zlib.h and gmp.h: without them their files would fail to compile
if [ "$PROJECTS_SET" = all ] && [ -z "${STAGE_ONLY:-}" ]; then
    for header in zlib.h:zlib1g-dev gmp.h:libgmp-dev; do
        if ! echo "#include <${header%%:*}>" | gcc -E -x c - >/dev/null 2>&1; then
            echo "error: <${header%%:*}> not found: install ${header##*:} (or PROJECTS=first19)" >&2
            exit 2
        fi
    done
fi

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

# The projects added after the first 19 (PROJECTS=all).
if [ "$PROJECTS_SET" = all ]; then

# mbedtls: library/ (libmbedcrypto, libmbedx509, libmbedtls) with include/mbedtls/ and
# include/psa/ copied to the root; not 3rdparty/everest (off by default), programs, tests.
# Debian's rules turn on some options with scripts/config.py before building: the same edits to
# mbedtls/config.h here (sed). Its Makefile passes -D_FILE_OFFSET_BITS=64.
d=$(unpacked mbedtls)
copy_to mbedtls "$d/library" . '*.c' '*.h'
copy_to mbedtls "$d/include/mbedtls" mbedtls '*.h'
copy_to mbedtls "$d/include/psa" psa '*.h'
rm "$STAGE/mbedtls/mbedtls/config.h"
sed -E 's@^//(#define (MBEDTLS_DEPRECATED_WARNING|MBEDTLS_HAVEGE_C|MBEDTLS_MD2_C|MBEDTLS_MD4_C|MBEDTLS_THREADING_C|MBEDTLS_THREADING_PTHREAD|MBEDTLS_CMAC_C|MBEDTLS_SSL_DTLS_SRTP))$@\1@' \
    "$d/include/mbedtls/config.h" | generated mbedtls mbedtls/config.h
prelude mbedtls <<'EOF'
#define _FILE_OFFSET_BITS 64
EOF

# libwebp: src/dec, demux, dsp, enc, mux, utils and sharpyuv/, keeping the tree: the files
# include "src/dsp/dsp.h", "sharpyuv/sharpyuv.h" from the root. The dsp files for other CPUs
# (*_neon.c, *_mips*.c, *_msa.c) and *_sse41.c (built with -msse4.1 only; empty stubs here) are
# left out; not examples/, extras/, imageio/, tests. configure passes -DNDEBUG (asserts off);
# without HAVE_CONFIG_H, src/dsp/cpu.h detects SSE2 from the compiler.
d=$(unpacked libwebp)
copy libwebp "$d" 'src/webp/*.h' 'src/dec/*.[ch]' 'src/demux/*.[ch]' 'src/dsp/*.[ch]' \
    'src/enc/*.[ch]' 'src/mux/*.[ch]' 'src/utils/*.[ch]' 'sharpyuv/*.[ch]'
rm -f "$STAGE"/libwebp/src/dsp/*_{neon,mips32,mips_dsp_r2,msa,sse41}.c "$STAGE"/libwebp/sharpyuv/*_neon.c
prelude libwebp <<'EOF'
#define NDEBUG 1
EOF

# lmdb: libraries/liblmdb/mdb.c and midl.c (the whole library); not the mdb_* tools nor the
# mtest programs. Its Makefile builds with -pthread (no defines).
d=$(unpacked lmdb)
copy lmdb "$d/libraries/liblmdb" mdb.c midl.c lmdb.h midl.h
prelude lmdb </dev/null

# utf8proc: utf8proc.c; its Unicode tables utf8proc_data.c are #included by it: moved to
# .included/. Its Makefile passes -DUTF8PROC_EXPORTS (visibility of the API).
d=$(unpacked utf8proc)
copy utf8proc "$d" utf8proc.c utf8proc.h utf8proc_data.c
included_only utf8proc utf8proc_data.c
prelude utf8proc <<'EOF'
#define UTF8PROC_EXPORTS 1
EOF

# giflib: the library files of its Makefile's SOURCES; not the gif* utilities nor getarg.c,
# qprintf.c (their helpers). No defines.
d=$(unpacked giflib)
copy giflib "$d" dgif_lib.c egif_lib.c gifalloc.c gif_err.c gif_font.c gif_hash.c \
    openbsd-reallocarray.c quantize.c gif_hash.h gif_lib.h gif_lib_private.h
prelude giflib </dev/null

# zopfli: src/zopfli/ without zopfli_bin.c (the program); not zopflipng (C++). No defines.
d=$(unpacked zopfli)
copy zopfli "$d/src" 'zopfli/*.c' 'zopfli/*.h'
rm "$STAGE/zopfli/zopfli/zopfli_bin.c"
prelude zopfli </dev/null

# libpng1.6: the png*.c library files at the top (not pngtest.c, example.c, contrib/, the
# arm/mips/powerpc/intel SIMD files: configure leaves PNG_INTEL_SSE_OPT off on x86 by default,
# so intel/ would compile to nothing). pnglibconf.h is what the build makes from the default
# pnglibconf.dfa: the shipped scripts/pnglibconf.h.prebuilt. No defines (zlib.h from the system).
d=$(unpacked libpng1.6)
copy libpng1.6 "$d" 'png*.c' 'png*.h'
rm "$STAGE/libpng1.6/pngtest.c"
generated libpng1.6 pnglibconf.h <"$d/scripts/pnglibconf.h.prebuilt"
prelude libpng1.6 </dev/null

# json-c: the library files of CMakeLists.txt's JSON_C_SOURCES (with json_pointer.c); not
# libjson.c (a compatibility stub), apps/, tests, fuzz, bench. cmake generates config.h (from
# cmake/config.h.in), json_config.h and json.h: written here with the values it finds on
# Linux/glibc (thread-local storage on, threading and RDRAND off: the defaults).
d=$(unpacked json-c)
copy json-c "$d" arraylist.c debug.c json_c_version.c json_object.c json_object_iterator.c \
    json_pointer.c json_tokener.c json_util.c json_visit.c linkhash.c printbuf.c random_seed.c \
    strerror_override.c '*.h'
sed 's/@JSON_H_JSON_POINTER@/#include "json_pointer.h"/' "$d/json.h.cmakein" | generated json-c json.h
generated json-c json_config.h <<'EOF'
#define JSON_C_HAVE_INTTYPES_H 1
EOF
generated json-c config.h <<'EOF'
#define HAVE_DLFCN_H
#define HAVE_ENDIAN_H
#define HAVE_FCNTL_H
#define HAVE_INTTYPES_H
#define HAVE_LIMITS_H
#define HAVE_LOCALE_H
#define HAVE_MEMORY_H
#define HAVE_STDARG_H
#define HAVE_STDINT_H
#define HAVE_STDLIB_H
#define HAVE_STRINGS_H
#define HAVE_STRING_H
#define HAVE_SYSLOG_H 1
#define HAVE_SYS_CDEFS_H
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_RANDOM_H
#define HAVE_SYS_RESOURCE_H
#define HAVE_SYS_STAT_H
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define HAVE_ATOMIC_BUILTINS
#define HAVE_DECL_INFINITY
#define HAVE_DECL_ISINF
#define HAVE_DECL_ISNAN
#define HAVE_DECL_NAN
#define HAVE_OPEN
#define HAVE_REALLOC
#define HAVE_SETLOCALE
#define HAVE_SNPRINTF
#define HAVE_STRCASECMP 1
#define HAVE_STRDUP
#define HAVE_STRERROR
#define HAVE_STRNCASECMP 1
#define HAVE_USELOCALE
#define HAVE_VASPRINTF
#define HAVE_VPRINTF
#define HAVE_VSNPRINTF
#define HAVE_VSYSLOG 1
#define HAVE_GETRANDOM
#define HAVE_GETRUSAGE
#define HAVE_STRTOLL
#define HAVE_STRTOULL
#define HAVE___THREAD
#define JSON_C_HAVE_INTTYPES_H 1
#define PACKAGE "json-c"
#define PACKAGE_STRING "json-c 0.16.0"
#define PACKAGE_TARNAME "json-c"
#define PACKAGE_URL "https://github.com/json-c/json-c"
#define PACKAGE_VERSION "0.16.0"
#define SIZEOF_INT 4
#define SIZEOF_INT64_T 8
#define SIZEOF_LONG 8
#define SIZEOF_LONG_LONG 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_SSIZE_T 8
#define SPEC___THREAD __thread
#define STDC_HEADERS
#define VERSION "0.16.0"
EOF
prelude json-c </dev/null

# xz-utils: liblzma, the files its Makefile builds (with the tuklib_cpucores.c and
# tuklib_physmem.c it takes from src/common), flattened into the root: the build passes an -I
# for each of the nine source directories, and no two files share a name. lzma.h and lzma/
# (the API) at the root too. Not the *_tablegen.c generators, crc*_small.c (--enable-small),
# the .S files, xz/xzdec/lzmainfo. config.h: what ./configure finds on Linux (Debian's options
# only add --enable-threads, the default). Its Makefile passes -DTUKLIB_SYMBOL_PREFIX=lzma_.
d=$(unpacked xz-utils)
copy_to xz-utils "$d/src/liblzma/api" . lzma.h
copy_to xz-utils "$d/src/liblzma/api/lzma" lzma '*.h'
for sub in check common delta lz lzma rangecoder simple; do
    copy_to xz-utils "$d/src/liblzma/$sub" . '*.c' '*.h'
done
copy_to xz-utils "$d/src/common" . tuklib_cpucores.c tuklib_physmem.c mythread.h sysdefs.h \
    'tuklib_*.h'
rm -f "$STAGE"/xz-utils/*_tablegen.c "$STAGE"/xz-utils/crc32_small.c "$STAGE"/xz-utils/crc64_small.c
generated xz-utils config.h <<'EOF'
#define ASSUME_RAM 128
#define HAVE_CHECK_CRC32 1
#define HAVE_CHECK_CRC64 1
#define HAVE_CHECK_SHA256 1
#define HAVE_CLOCK_GETTIME 1
#define HAVE_CLOCK_MONOTONIC 1
#define HAVE_CPUID_H 1
#define HAVE_DECODERS 1
#define HAVE_DECODER_ARM 1
#define HAVE_DECODER_ARM64 1
#define HAVE_DECODER_ARMTHUMB 1
#define HAVE_DECODER_DELTA 1
#define HAVE_DECODER_IA64 1
#define HAVE_DECODER_LZMA1 1
#define HAVE_DECODER_LZMA2 1
#define HAVE_DECODER_POWERPC 1
#define HAVE_DECODER_SPARC 1
#define HAVE_DECODER_X86 1
#define HAVE_DLFCN_H 1
#define HAVE_ENCODERS 1
#define HAVE_ENCODER_ARM 1
#define HAVE_ENCODER_ARM64 1
#define HAVE_ENCODER_ARMTHUMB 1
#define HAVE_ENCODER_DELTA 1
#define HAVE_ENCODER_IA64 1
#define HAVE_ENCODER_LZMA1 1
#define HAVE_ENCODER_LZMA2 1
#define HAVE_ENCODER_POWERPC 1
#define HAVE_ENCODER_SPARC 1
#define HAVE_ENCODER_X86 1
#define HAVE_FCNTL_H 1
#define HAVE_FUNC_ATTRIBUTE_CONSTRUCTOR 1
#define HAVE_FUTIMENS 1
#define HAVE_GETOPT_H 1
#define HAVE_GETOPT_LONG 1
#define HAVE_IMMINTRIN_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_LIMITS_H 1
#define HAVE_LZIP_DECODER 1
#define HAVE_MBRTOWC 1
#define HAVE_MF_BT2 1
#define HAVE_MF_BT3 1
#define HAVE_MF_BT4 1
#define HAVE_MF_HC3 1
#define HAVE_MF_HC4 1
#define HAVE_POSIX_FADVISE 1
#define HAVE_PROGRAM_INVOCATION_NAME 1
#define HAVE_PTHREAD_CONDATTR_SETCLOCK 1
#define HAVE_PTHREAD_PRIO_INHERIT 1
#define HAVE_STDBOOL_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDIO_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_STRUCT_STAT_ST_ATIM_TV_NSEC 1
#define HAVE_SYMBOL_VERSIONS_LINUX 2
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UINTPTR_T 1
#define HAVE_UNISTD_H 1
#define HAVE_USABLE_CLMUL 1
#define HAVE_VISIBILITY 1
#define HAVE_WCHAR_H 1
#define HAVE_WCWIDTH 1
#define HAVE__BOOL 1
#define HAVE__MM_MOVEMASK_EPI8 1
#define HAVE___BUILTIN_ASSUME_ALIGNED 1
#define HAVE___BUILTIN_BSWAPXX 1
#define MYTHREAD_POSIX 1
#define NDEBUG 1
#define PACKAGE "xz"
#define PACKAGE_BUGREPORT "xz@tukaani.org"
#define PACKAGE_NAME "XZ Utils"
#define PACKAGE_STRING "XZ Utils 5.4.1"
#define PACKAGE_TARNAME "xz"
#define PACKAGE_URL "https://tukaani.org/xz/"
#define PACKAGE_VERSION "5.4.1"
#define SIZEOF_SIZE_T 8
#define STDC_HEADERS 1
#define TUKLIB_CPUCORES_SCHED_GETAFFINITY 1
#define TUKLIB_FAST_UNALIGNED_ACCESS 1
#define TUKLIB_PHYSMEM_SYSCONF 1
#define VERSION "5.4.1"
EOF
prelude xz-utils <<'EOF'
#define HAVE_CONFIG_H 1
#define TUKLIB_SYMBOL_PREFIX lzma_
EOF

# nettle: libnettle and libhogweed (Makefile's nettle_SOURCES and hogweed_SOURCES; gmp.h from
# the system), i.e. every .c file at the top except the table generators (*data.c), getopt,
# mini-gmp, nettle-internal.c (tests), sha-example.c and the fat-*.c CPU dispatchers. The
# elliptic-curve files ecc-secp*.c, ecc-curve25519.c, ecc-curve448.c, ecc-gost-*.c include
# tables that the build computes by running eccdata: left out. Plain C (as --disable-assembler;
# Debian uses --enable-fat with the x86_64 assembly). config.h from config.h.in with what
# configure finds on Linux; version.h from version.h.in.
d=$(unpacked nettle)
copy nettle "$d" '*.c' '*.h'
(cd "$STAGE/nettle" && rm -f aesdata.c desdata.c eccdata.c gcmdata.c shadata.c twofishdata.c \
    getopt.c getopt1.c getopt.h getopt_int.h mini-gmp.c mini-gmp.h nettle-internal.c \
    sha-example.c fat-*.c ecc-secp*.c ecc-curve25519.c ecc-curve448.c ecc-gost-*.c)
sed -E -e 's/^#undef (HAVE_ALLOCA|HAVE_ALLOCA_H|HAVE_BUILTIN_BSWAP64|HAVE_CLOCK_GETTIME|HAVE_DLFCN_H|HAVE_FCNTL_LOCKING|HAVE_GCC_ATTRIBUTE|HAVE_GETLINE|HAVE_INTTYPES_H|HAVE_LIBGMP|HAVE_MALLOC_H|HAVE_MEMORY_H|HAVE_SECURE_GETENV|HAVE_STDINT_H|HAVE_STDLIB_H|HAVE_STRERROR|HAVE_STRINGS_H|HAVE_STRING_H|HAVE_SYS_STAT_H|HAVE_SYS_TYPES_H|HAVE_UNISTD_H|STDC_HEADERS|TIME_WITH_SYS_TIME|WITH_HOGWEED)$/#define \1 1/' \
    -e 's/^#undef (SIZEOF_LONG|SIZEOF_SIZE_T)$/#define \1 8/' \
    "$d/config.h.in" | generated nettle config.h
sed -e 's/@MAJOR_VERSION@/3/' -e 's/@MINOR_VERSION@/8/' -e 's/@NETTLE_USE_MINI_GMP@/0/' \
    -e 's/@GMP_NUMB_BITS@/64/' "$d/version.h.in" | generated nettle version.h
prelude nettle <<'EOF'
#define HAVE_CONFIG_H 1
EOF

# c-ares: src/lib/ (Makefile.inc's CSOURCES without ares_android.c and windows_port.c, empty on
# Linux) with include/ at the root; not the adig/ahost tools, test/. configure generates
# ares_config.h and include/ares_build.h: written here with what it finds on Linux/glibc. The
# build passes -DHAVE_CONFIG_H -DCARES_BUILDING_LIBRARY and (Debian's --enable-symbol-hiding)
# -DCARES_SYMBOL_HIDING.
d=$(unpacked c-ares)
copy_to c-ares "$d/src/lib" . '*.c' '*.h'
rm "$STAGE/c-ares/ares_android.c" "$STAGE/c-ares/windows_port.c"
copy_to c-ares "$d/include" . ares.h ares_dns.h ares_nameser.h ares_rules.h ares_version.h
generated c-ares ares_build.h <<'EOF'
#ifndef __CARES_BUILD_H
#define __CARES_BUILD_H
#define CARES_HAVE_ARPA_NAMESER_H 1
#define CARES_HAVE_ARPA_NAMESER_COMPAT_H 1
#define CARES_PULL_SYS_TYPES_H 1
#include <sys/types.h>
#define CARES_PULL_SYS_SOCKET_H 1
#include <sys/socket.h>
#define CARES_TYPEOF_ARES_SOCKLEN_T socklen_t
typedef CARES_TYPEOF_ARES_SOCKLEN_T ares_socklen_t;
#define CARES_TYPEOF_ARES_SSIZE_T ssize_t
typedef CARES_TYPEOF_ARES_SSIZE_T ares_ssize_t;
#endif
EOF
generated c-ares ares_config.h <<'EOF'
#define CARES_RANDOM_FILE "/dev/urandom"
#define CARES_SYMBOL_HIDING 1
#define CARES_SYMBOL_SCOPE_EXTERN __attribute__ ((__visibility__ ("default")))
#define CARES_TYPEOF_ARES_SSIZE_T ssize_t
#define GETHOSTNAME_TYPE_ARG2 size_t
#define GETNAMEINFO_QUAL_ARG1 const
#define GETNAMEINFO_TYPE_ARG1 struct sockaddr *
#define GETNAMEINFO_TYPE_ARG2 socklen_t
#define GETNAMEINFO_TYPE_ARG46 socklen_t
#define GETNAMEINFO_TYPE_ARG7 int
#define GETSERVBYPORT_R_ARGS 6
#define GETSERVBYPORT_R_BUFSIZE 4096
#define HAVE_AF_INET6 1
#define HAVE_ARPA_INET_H 1
#define HAVE_ARPA_NAMESER_COMPAT_H 1
#define HAVE_ARPA_NAMESER_H 1
#define HAVE_ASSERT_H 1
#define HAVE_BOOL_T 1
#define HAVE_CLOCK_GETTIME_MONOTONIC 1
#define HAVE_CONNECT 1
#define HAVE_DLFCN_H 1
#define HAVE_ERRNO_H 1
#define HAVE_FCNTL 1
#define HAVE_FCNTL_H 1
#define HAVE_FCNTL_O_NONBLOCK 1
#define HAVE_FREEADDRINFO 1
#define HAVE_GETADDRINFO 1
#define HAVE_GETADDRINFO_THREADSAFE 1
#define HAVE_GETENV 1
#define HAVE_GETHOSTBYADDR 1
#define HAVE_GETHOSTBYNAME 1
#define HAVE_GETHOSTNAME 1
#define HAVE_GETNAMEINFO 1
#define HAVE_GETSERVBYPORT_R 1
#define HAVE_GETTIMEOFDAY 1
#define HAVE_IF_INDEXTONAME 1
#define HAVE_INET_NTOP 1
#define HAVE_INET_PTON 1
#define HAVE_INTTYPES_H 1
#define HAVE_IOCTL 1
#define HAVE_IOCTL_FIONBIO 1
#define HAVE_IOCTL_SIOCGIFADDR 1
#define HAVE_LIMITS_H 1
#define HAVE_LL 1
#define HAVE_LONGLONG 1
#define HAVE_MALLOC_H 1
#define HAVE_MEMORY_H 1
#define HAVE_MSG_NOSIGNAL 1
#define HAVE_NETDB_H 1
#define HAVE_NETINET_IN_H 1
#define HAVE_NETINET_TCP_H 1
#define HAVE_NET_IF_H 1
#define HAVE_PF_INET6 1
#define HAVE_RECV 1
#define HAVE_RECVFROM 1
#define HAVE_SEND 1
#define HAVE_SETSOCKOPT 1
#define HAVE_SIGNAL_H 1
#define HAVE_SIG_ATOMIC_T 1
#define HAVE_SOCKADDR_IN6_SIN6_SCOPE_ID 1
#define HAVE_SOCKET 1
#define HAVE_STDBOOL_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDIO_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRCASECMP 1
#define HAVE_STRDUP 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_STRNCASECMP 1
#define HAVE_STRUCT_ADDRINFO 1
#define HAVE_STRUCT_IN6_ADDR 1
#define HAVE_STRUCT_SOCKADDR_IN6 1
#define HAVE_STRUCT_SOCKADDR_STORAGE 1
#define HAVE_STRUCT_TIMEVAL 1
#define HAVE_SYS_IOCTL_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_SELECT_H 1
#define HAVE_SYS_SOCKET_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_UIO_H 1
#define HAVE_TIME_H 1
#define HAVE_UNISTD_H 1
#define HAVE_WRITEV 1
#define OS "x86_64-pc-linux-gnu"
#define PACKAGE "c-ares"
#define PACKAGE_BUGREPORT "c-ares mailing list: http://lists.haxx.se/listinfo/c-ares"
#define PACKAGE_NAME "c-ares"
#define PACKAGE_STRING "c-ares 1.18.1"
#define PACKAGE_TARNAME "c-ares"
#define PACKAGE_URL ""
#define PACKAGE_VERSION "1.18.1"
#define RECVFROM_QUAL_ARG5
#define RECVFROM_TYPE_ARG1 int
#define RECVFROM_TYPE_ARG2 void
#define RECVFROM_TYPE_ARG2_IS_VOID 1
#define RECVFROM_TYPE_ARG3 size_t
#define RECVFROM_TYPE_ARG4 int
#define RECVFROM_TYPE_ARG5 struct sockaddr
#define RECVFROM_TYPE_ARG6 socklen_t
#define RECVFROM_TYPE_RETV ssize_t
#define RECV_TYPE_ARG1 int
#define RECV_TYPE_ARG2 void *
#define RECV_TYPE_ARG3 size_t
#define RECV_TYPE_ARG4 int
#define RECV_TYPE_RETV ssize_t
#define RETSIGTYPE void
#define SEND_QUAL_ARG2 const
#define SEND_TYPE_ARG1 int
#define SEND_TYPE_ARG2 void *
#define SEND_TYPE_ARG3 size_t
#define SEND_TYPE_ARG4 int
#define SEND_TYPE_RETV ssize_t
#define STDC_HEADERS 1
#define TIME_WITH_SYS_TIME 1
#define VERSION "1.18.1"
EOF
prelude c-ares <<'EOF'
#define HAVE_CONFIG_H 1
#define CARES_BUILDING_LIBRARY 1
#define CARES_SYMBOL_HIDING 1
EOF

# opus: the floating-point library as its Makefile builds it (celt/, silk/, silk/float/, src/),
# flattened into the root with include/*.h: the build passes -Iinclude -Icelt -Isilk
# -Isilk/float, and no two files share a name; silk/float/ is also kept as float/ for
# silk/structs.h's #include "float/structs_FLP.h". Not celt/opus_custom_demo.c, the src/ demo
# and compare programs, silk/fixed (fixed-point build), the x86/arm/mips SIMD files (plain C, as
# --disable-intrinsics), tests. config.h: what ./configure finds on Linux with Debian's
# --enable-custom-modes.
d=$(unpacked opus)
for sub in celt silk silk/float src include; do
    copy_to opus "$d/$sub" . '*.c' '*.h'
done
copy_to opus "$d/silk/float" float '*.h'
rm "$STAGE/opus/opus_custom_demo.c" "$STAGE/opus/opus_demo.c" "$STAGE/opus/opus_compare.c" \
    "$STAGE/opus/repacketizer_demo.c"
generated opus config.h <<'EOF'
#define CUSTOM_MODES 1
#define ENABLE_HARDENING 1
#define HAVE_DLFCN_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_LRINT 1
#define HAVE_LRINTF 1
#define HAVE_MEMORY_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define OPUS_BUILD /**/
#define PACKAGE_BUGREPORT "opus@xiph.org"
#define PACKAGE_NAME "opus"
#define PACKAGE_STRING "opus 1.3.1"
#define PACKAGE_TARNAME "opus"
#define PACKAGE_URL ""
#define PACKAGE_VERSION "1.3.1"
#define STDC_HEADERS 1
#define VAR_ARRAYS 1
#define restrict __restrict
EOF
prelude opus <<'EOF'
#define HAVE_CONFIG_H 1
EOF
fi  # the projects added after the first 19

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
    --levels "$LEVELS" --compilers "$COMPILERS" \
    --validation-projects "$VALIDATION_PROJECTS" --test-projects "$TEST_PROJECTS" \
    --workers "$WORKERS" --cflags="-include pairs_prelude.h -I.included"

# ---------------------------------------------------------------------------------------------
# 4. Rows and complete groups (present at every level) per split and project

"$PYTHON" - "$OUTPUT" <<'EOF'
import collections
import json
import sys

from undertale.data.pairs.build import read_pairs

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
