#!/usr/bin/env bash
# Checks the kvpress press against the compresskv runtime on the tiny models (see check.py).
# Not part of CI: it installs torch (PyPI's wheel brings gigabytes of CUDA libraries; it runs
# on the CPU here). Usage: integrations/kvpress/check.sh [VENV_DIR] [check.py options]
#   VENV_DIR           the venv to create or reuse (default: target/kvpress-venv, ignored by git)
#   COMPRESSKV_SHARED  the shared data directory (default: ../shared next to the repository)
#   COMPRESSKV_BIN     the compresskv binary (default: target/release/compresskv, built if missing)
#   TORCH_INDEX_URL    e.g. https://download.pytorch.org/whl/cpu for the CPU-only torch wheel
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$repo/target/kvpress-venv}"
shift $(( $# > 0 ? 1 : 0 ))
shared="${COMPRESSKV_SHARED:-$repo/../shared}"
bin="${COMPRESSKV_BIN:-$repo/target/release/compresskv}"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# The versions the README's measurement was made with.
"$venv/bin/pip" install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    torch==2.15.0 transformers==5.2.0 kvpress==0.5.5
"$venv/bin/pip" install -q --no-deps --force-reinstall "$repo/integrations/kvpress"
[ -x "$bin" ] || (cd "$repo" && cargo build --release --bin compresskv)
exec "$venv/bin/python" "$repo/integrations/kvpress/check.py" \
    --bin "$bin" --tiny "$shared/reference/tiny" "$@"
