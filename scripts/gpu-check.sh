#!/usr/bin/env bash
# The GPU check: on a machine with a GPU (and no network), run the golden tests on the device,
# then `compresskv bench` at long prompts for the full cache vs CompressKV, and write one JSON
# report. Everything comes prepared (a binary and a test executable built with the GPU feature,
# the model in the model cache, libdevice for CUDA) or is found on the machine; what is missing
# is named before anything runs.
#
#   scripts/gpu-check.sh --device cuda --out /tmp/gpu-check
#   scripts/gpu-check.sh --device wgpu --lengths 256,512 --repeats 1 --decode-tokens 8   # lavapipe
#
# Report: OUT/gpu-check.json = {device, binary, golden, cli_goldens, bench: <bench --json>}
# plus OUT/golden.log, OUT/cli-goldens.log and OUT/bench.log. Exit 0 only when every check that
# ran passed.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/gpu-check.sh [options]

  --device D          cuda, cuda:N or wgpu (default: cuda)
  --bin PATH          compresskv built with --features cuda|wgpu (default: target/release/compresskv)
  --tests PATH        the e2e test executable built with the same feature (default: build it with
                      cargo when cargo is here, else skip the golden tests and say so)
  --model ID          model id or path (default: google/gemma-3-270m, from the model cache:
                      $COMPRESSKV_HOME/models or ~/.cache/compresskv/models)
  --lengths L,L,...   prompt lengths (default: 8192,16384,32704; prompt + decoded tokens must
                      fit the model's context)
  --methods M         bench methods (default: full,compresskv)
  --budget B          KV entries kept per compressed layer (default: 128)
  --decode-tokens N   tokens decoded per measurement (default: 64)
  --repeats R         measured repeats per length (default: 2)
  --haystack H        bench haystack (default: noise, which needs no files)
  --out DIR           where the report goes (default: $OUT, else ./gpu-check-out)
  -h, --help          this text
EOF
}

die() { echo "gpu-check: error: $*" >&2; exit 2; }
say() { echo "gpu-check: $*" >&2; }

cd "$(dirname "$0")/.."
DEVICE=cuda
BIN=target/release/compresskv
TESTS=""
MODEL=google/gemma-3-270m
LENGTHS="8192,16384,32704"   # 32768 - 64 decoded tokens: Gemma 3 270M's context
METHODS=full,compresskv
BUDGET=128
DECODE=64
REPEATS=2
HAYSTACK=noise
OUTDIR="${OUT:-gpu-check-out}"
while [[ $# -gt 0 ]]; do
    [[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
    [[ $# -ge 2 ]] || { usage >&2; die "$1 needs a value"; }
    case "$1" in
        --device) DEVICE="$2" ;;
        --bin) BIN="$2" ;;
        --tests) TESTS="$2" ;;
        --model) MODEL="$2" ;;
        --lengths) LENGTHS="${2// /,}" ;;
        --methods) METHODS="$2" ;;
        --budget) BUDGET="$2" ;;
        --decode-tokens) DECODE="$2" ;;
        --repeats) REPEATS="$2" ;;
        --haystack) HAYSTACK="$2" ;;
        --out) OUTDIR="$2" ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift 2
done
case "$DEVICE" in
    cuda | cuda:[0-9]*) FEATURE=cuda ;;
    wgpu) FEATURE=wgpu ;;
    *) die "--device must be cuda, cuda:N or wgpu (got '$DEVICE')" ;;
esac
mkdir -p "$OUTDIR"

# ---- what must be here -------------------------------------------------------------------------
missing=()
[[ -x "$BIN" ]] || missing+=("the binary $BIN: build it with 'cargo build --release --features $FEATURE' and pass --bin")
if [[ $FEATURE == cuda ]]; then
    command -v nvidia-smi >/dev/null 2>&1 || say "note: nvidia-smi not found (the driver's libcuda is still what counts)"
    libdevice=""
    for d in "${CUDA_PATH:-}" "${CUDA_HOME:-}" /usr/local/cuda /opt/cuda; do
        [[ -n "$d" && -f "$d/nvvm/libdevice/libdevice.10.bc" ]] && { libdevice="$d/nvvm/libdevice/libdevice.10.bc"; break; }
    done
    [[ -n "$libdevice" ]] || missing+=("libdevice.10.bc (CUDA kernels link it): set CUDA_PATH to a dir with nvvm/libdevice/; 'scripts/setup-cuda-llvm.sh --with-libdevice DIR' prepares one")
    [[ -z "$libdevice" ]] || export CUDA_PATH="${libdevice%/nvvm/libdevice/libdevice.10.bc}"
fi
if [[ $FEATURE == cuda && -z "${CUBECL_AUTOTUNE_LEVEL:-}" ]]; then
    # On an H200 (2026-12-04) Burn 0.22.1's attention autotune chose a kernel that then failed
    # ("No tile size is available") on 8K prompts, in bf16 and f32; the minimal level ran 8K/16K.
    export CUBECL_AUTOTUNE_LEVEL=minimal
    say "CUBECL_AUTOTUNE_LEVEL=minimal (the default level failed on CUDA at 8K; set it to override)"
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    for m in "${missing[@]}"; do say "missing: $m"; done
    exit 2
fi

# One token on the device: the build has the backend, the device opens, the model loads.
say "smoke test: one token of $MODEL on $DEVICE"
if ! smoke="$("$BIN" generate --device "$DEVICE" --model "$MODEL" --precision exact \
        --prompt "The capital of France is" --max-new-tokens 1 --json 2>&1)"; then
    echo "$smoke" | tail -n 5 >&2
    die "the binary cannot run $MODEL on $DEVICE (see the error above: a build without --features $FEATURE, no driver, or the model not in the model cache — copy it to \$COMPRESSKV_HOME/models/ or run 'compresskv fetch' where the network is)"
fi

# ---- golden checks through the binary alone ----------------------------------------------------
# Greedy continuations of every tiny reference model and of Gemma 3 270M's short reference prompt
# on the device, against the reference implementation's (needs ../shared/reference or
# $COMPRESSKV_SHARED, and python3): all the binary can check without the test executable.
SHARED="${COMPRESSKV_SHARED:-../shared}"
cli_status=skipped
if [[ -d "$SHARED/reference" ]] && command -v python3 >/dev/null 2>&1; then
    say "greedy goldens through the binary on $DEVICE"
    if python3 - "$BIN" "$DEVICE" "$SHARED/reference" "$MODEL" >"$OUTDIR/cli-goldens.log" 2>&1 <<'PY'
import json, subprocess, sys
bin_, device, ref, model = sys.argv[1:5]
cases = []
for arch in ["llama", "mistral", "qwen2", "qwen3", "gemma3"]:
    g = json.load(open(f"{ref}/tiny/tiny-{arch}/golden.json"))
    for p in g["prompts"]:
        cases.append((f"tiny-{arch}", f"{ref}/tiny/tiny-{arch}", p["text"], p["greedy12"]))
g = json.load(open(f"{ref}/gemma-3-270m/model_logits.json"))
short = min(g["prompts"], key=lambda p: len(p["ids"]))
cases.append(("gemma-3-270m", model, short["text"], short["greedy20_ids"]))
bad = 0
for name, m, text, want in cases:
    out = subprocess.run([bin_, "generate", "--device", device, "--precision", "exact",
                          "--dtype", "f32", "--model", m, "--prompt", text,
                          "--max-new-tokens", str(len(want)), "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"FAIL {name}: {out.stderr.strip()[-300:]}"); bad += 1; continue
    got = json.loads(out.stdout)["token_ids"]
    ok = got == want
    bad += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {len(want)} greedy tokens" + ("" if ok else f": {got} vs {want}"))
sys.exit(1 if bad else 0)
PY
    then cli_status=passed; else cli_status=failed; fi
    cat "$OUTDIR/cli-goldens.log" >&2
else
    say "greedy goldens skipped: $SHARED/reference or python3 missing (set COMPRESSKV_SHARED)"
fi

# ---- golden tests on the device -----------------------------------------------------------------
golden_status=skipped
if [[ -z "$TESTS" ]] && command -v cargo >/dev/null 2>&1; then
    say "building the e2e tests with --features $FEATURE"
    TESTS="$(cargo test --release --features "$FEATURE" --test e2e --no-run --message-format=json 2>>"$OUTDIR/golden.log" \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)" || true
fi
if [[ -n "$TESTS" && -x "$TESTS" ]]; then
    say "golden tests on $DEVICE ($TESTS gpu::)"
    if COMPRESSKV_TEST_DEVICE="$DEVICE" CI=true "$TESTS" gpu:: --test-threads 1 >>"$OUTDIR/golden.log" 2>&1; then
        golden_status=passed
    else
        golden_status=failed
        tail -n 20 "$OUTDIR/golden.log" >&2
    fi
else
    say "golden tests skipped: no test executable (pass --tests PATH: the e2e binary from 'cargo test --release --features $FEATURE --test e2e --no-run'; it reads ../shared or \$COMPRESSKV_SHARED)"
    echo "skipped: no test executable" >>"$OUTDIR/golden.log"
fi
say "golden tests: $golden_status"

# ---- bench ------------------------------------------------------------------------------------
say "bench on $DEVICE: lengths $LENGTHS, methods $METHODS, budget $BUDGET"
if ! "$BIN" bench --device "$DEVICE" --model "$MODEL" --precision exact --lengths "$LENGTHS" \
        --methods "$METHODS" --budget "$BUDGET" --decode-tokens "$DECODE" --repeats "$REPEATS" \
        --haystack "$HAYSTACK" --json >"$OUTDIR/bench.json" 2>"$OUTDIR/bench.log"; then
    tail -n 5 "$OUTDIR/bench.log" >&2
    die "the bench failed (log: $OUTDIR/bench.log)"
fi

{
    printf '{\n  "device": "%s",\n  "binary": "%s",\n' "$DEVICE" "$BIN"
    printf '  "golden": {"status": "%s", "log": "golden.log"},\n' "$golden_status"
    printf '  "cli_goldens": {"status": "%s", "log": "cli-goldens.log"},\n' "$cli_status"
    printf '  "bench": '
    cat "$OUTDIR/bench.json"
    printf '}\n'
} >"$OUTDIR/gpu-check.json"
say "report: $OUTDIR/gpu-check.json"
if command -v python3 >/dev/null 2>&1; then
    python3 - "$OUTDIR/gpu-check.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = r["bench"]["rows"]
mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"
print(f"device {r['device']}, golden tests {r['golden']['status']}, greedy goldens {r['cli_goldens']['status']}")
print(f"{'method':<12}{'length':>8}{'prefill tok/s':>15}{'decode tok/s':>14}{'KV MiB':>10}{'device MiB':>12}")
for x in rows:
    print(f"{x['method']:<12}{x['length']:>8}{x['prefill_tokens_per_s']:>15.1f}"
          f"{x['decode_tokens_per_s']:>14.1f}{mib(x['kv_cache_bytes']):>10}{mib(x['device_memory_bytes']):>12}")
PY
fi
[[ $golden_status != failed && $cli_status != failed ]]
