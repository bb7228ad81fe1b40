#!/usr/bin/env python3
"""CompressKV and llama.cpp side by side on the same GGUF, in one run (the machines are noisy,
so only ratios measured together mean anything).

Runs `compresskv bench --json` and llama.cpp's `llama-bench` (built by
../shared/tools/llama-bench/build.sh from the llama.cpp source that the PyPI sdist of
llama-cpp-python vendors) on the same file with the same thread count, then prints both and the
ratios as a table (and, with --json, one JSON object).

Like for like: llama-bench prefills in 512-token micro-batches and computes logits for the last
prompt token only (so does `compresskv bench`: one prefill, logits of the last token); its
decode test (`-n 64 -d N`) decodes 64 tokens after N tokens of context, which is what
`compresskv bench` measures after prefilling N tokens. llama.cpp keeps its KV cache in f16 with
flash attention; so does ours (f16 host rows, widened in the attention kernels).

Noise: each length runs ours and then llama-bench back to back, `--rounds` times; every ratio is
formed within a round (both sides saw the same machine state) and the table gives the median
over rounds (the JSON keeps each round's ratios).

Usage: scripts/bench_vs_llama.py [--lengths 1024,4096,16384] [--budget 128] [--repeats 3]
           [--rounds 3] [--threads 2] [--model google/gemma-3-270m] [--json] [--out FILE]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("COMPRESSKV_SHARED", ROOT.parent / "shared"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, env=None):
    log("$ " + " ".join(str(c) for c in cmd))
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, text=True)
    return out.stdout


def crashed(err):
    """llama.cpp built with GGML_NATIVE on a CPU that advertises AMX runs its prompt matmuls on
    AMX tiles (its "repacked" weights); on the 2-vCPU Xeon VMs we measure on, that path dies of a
    signal (SIGILL at `tileloadd`, or SIGSEGV), although tile instructions run there (ours do).
    Its `--repack 0` keeps the weights in the file's layout (AVX-512 kernels)."""
    return isinstance(err, subprocess.CalledProcessError) and err.returncode < 0


def gguf_path(model):
    home = pathlib.Path(os.environ.get("COMPRESSKV_HOME", pathlib.Path.home() / ".cache/compresskv"))
    d = home / "models" / model.replace("/", "--")
    files = sorted(d.glob("*.gguf"))
    if not files:
        sys.exit(f"no GGUF for {model} in {d}: run `cargo run --release -- fetch {model}` first")
    return files[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="google/gemma-3-270m")
    ap.add_argument("--lengths", default="1024,4096,16384")
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds (ours then llama.cpp per length); medians reported")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="also write the JSON result here")
    a = ap.parse_args()
    if a.rounds < 1 or a.repeats < 1:
        sys.exit("--rounds and --repeats must be at least 1")
    try:
        lengths = [int(x) for x in a.lengths.split(",")]
    except ValueError:
        sys.exit(f"--lengths {a.lengths!r}: give token counts separated by commas, e.g. 1024,4096")

    gguf = gguf_path(a.model)
    build = SHARED / "tools/llama-bench/build.sh"
    if not build.exists():
        sys.exit(f"{build} not found (set COMPRESSKV_SHARED to the shared/ directory)")
    llama = run(["bash", str(build)]).strip().splitlines()[-1]
    # Build first, so no round pays for compiling, then run that binary (not `cargo run`: a
    # source edited during a long run would rebuild or break the rounds still to come).
    run(["cargo", "build", "--release", "-q"])
    exe = ROOT / "target/release/compresskv"
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    prefill_lengths = [n for n in lengths if n <= 4096]

    def ours_at(n):
        out = json.loads(run(
            [str(exe), "bench", "--model", a.model,
             "--lengths", str(n), "--methods", "full,compresskv", "--budget", str(a.budget),
             "--decode-tokens", str(a.decode_tokens), "--repeats", str(a.repeats), "--json"],
            env=env))
        rows = {r["method"]: r for r in out["rows"]}
        return out, rows.get("full"), rows.get("compresskv")

    # llama.cpp's own default first; `--repack 0` only where the default dies of SIGILL.
    llama_extra = []
    repack_note = None

    def llama_run(cmd):
        nonlocal llama_extra, repack_note
        try:
            return run(cmd + llama_extra)
        except subprocess.CalledProcessError as e:
            if llama_extra or not crashed(e):
                raise
            repack_note = (f"llama-bench with its default weight repacking died of signal "
                           f"{-e.returncode} (in its AMX tile path); "
                           "every llama.cpp figure is with --repack 0")
            log(repack_note)
            llama_extra = ["--repack", "0"]
            return run(cmd + llama_extra)

    def llama_at(n):
        found = {}
        cmds = []
        if n in prefill_lengths:
            cmds.append([llama, "-m", str(gguf), "-t", str(a.threads), "-p", str(n), "-n", "0",
                         "-r", str(a.repeats), "-o", "jsonl"])
        cmds.append([llama, "-m", str(gguf), "-t", str(a.threads), "-p", "0", "-n",
                     str(a.decode_tokens), "-d", str(n), "-r", str(a.repeats), "-o", "jsonl"])
        for cmd in cmds:
            for line in llama_run(cmd).splitlines():
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                found["build"] = r.get("build_commit")
                found["cpu"] = r.get("cpu_info")
                if r["n_gen"] == 0:
                    found["prefill"] = r["avg_ts"]
                else:
                    found["decode"] = r["avg_ts"]
        return found

    ratio = lambda x, y: (x / y) if (x and y) else None

    def median(v):
        v = sorted(x for x in v if x is not None)
        if not v:
            return None
        m = len(v) // 2
        return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2

    # Rounds: each length runs ours then llama.cpp back to back, so both see the same machine
    # state; a ratio is formed within a round, and the table reports the median over rounds.
    rounds = {n: [] for n in lengths}
    ours = {}
    theirs_meta = {}
    for k in range(a.rounds):
        for n in lengths:
            log(f"round {k + 1}/{a.rounds}, {n} tokens")
            ours, full, ckv = ours_at(n)
            lp = llama_at(n)
            theirs_meta = lp
            rounds[n].append({
                "llama_prefill_tok_s": lp.get("prefill"),
                "ours_prefill_tok_s": full and full["prefill_tokens_per_s"],
                "ours_prefill_bound_tok_s": full and full.get("prefill_compute_bound_tokens_per_s"),
                "llama_decode_tok_s": lp.get("decode"),
                "ours_decode_full_tok_s": full and full["decode_tokens_per_s"],
                "ours_decode_compresskv_tok_s": ckv and ckv["decode_tokens_per_s"],
                "ours_peak_rss_bytes": full and full["peak_rss_bytes"],
                "ours_compress_share": ckv and ckv["compress_share"],
            })
            r = rounds[n][-1]
            r["prefill_ratio"] = ratio(r["ours_prefill_tok_s"], r["llama_prefill_tok_s"])
            # The f32 FMA roofline of our prefill, measured in the same run, over llama.cpp's
            # prefill: the highest prefill ratio f32 matmuls could reach on this machine.
            r["prefill_bound_ratio"] = ratio(r["ours_prefill_bound_tok_s"], r["llama_prefill_tok_s"])
            r["decode_full_ratio"] = ratio(r["ours_decode_full_tok_s"], r["llama_decode_tok_s"])
            r["decode_compresskv_ratio"] = ratio(r["ours_decode_compresskv_tok_s"],
                                                 r["llama_decode_tok_s"])

    rows = []
    for n in lengths:
        row = {"length": n}
        for key in rounds[n][0]:
            vals = [r[key] for r in rounds[n]]
            row[key] = max((v for v in vals if v is not None), default=None) \
                if key == "ours_peak_rss_bytes" else median(vals)
        for key in ("prefill_ratio", "decode_full_ratio", "decode_compresskv_ratio"):
            row[key + "_per_round"] = [r[key] for r in rounds[n]]
        rows.append(row)
    theirs = [{"build_commit": theirs_meta.get("build"), "cpu_info": theirs_meta.get("cpu")}]
    # Where repacking crashed on prompts, its decode with no context still runs (no prompt
    # matmul): measure it once, so the table does not hide llama.cpp's fastest decode here.
    repacked_decode0 = None
    if llama_extra:
        out = run([llama, "-m", str(gguf), "-t", str(a.threads), "-p", "0", "-n",
                   str(a.decode_tokens), "-r", str(a.repeats), "-o", "jsonl"])
        for line in out.splitlines():
            if line.strip().startswith("{"):
                repacked_decode0 = json.loads(line)["avg_ts"]

    result = {
        "model": a.model, "gguf": str(gguf), "threads": a.threads, "budget": a.budget,
        "rounds": a.rounds, "repeats": a.repeats,
        "device": ours.get("device"), "weight_formats": ours.get("weight_formats"),
        "llama_build": theirs[0].get("build_commit") if theirs else None,
        "llama_cpu": theirs[0].get("cpu_info") if theirs else None,
        "rows": rows,
        "llama_repack": not llama_extra,
        "llama_repack_note": repack_note,
        "llama_repacked_decode_at_0_tok_s": repacked_decode0,
    }
    text = json.dumps(result, indent=2)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    if a.json:
        print(text)
        return

    f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"
    hdr = ["context", "prefill llama.cpp", "prefill ours", "ratio", "f32 roofline (ratio)",
           "decode llama.cpp (full)", "decode ours (full)", "ratio",
           f"decode ours (compresskv @{a.budget})", "ratio", "peak RSS ours"]
    table = [hdr]
    for r in rows:
        table.append([
            str(r["length"]), f(r["llama_prefill_tok_s"]) if r["prefill_ratio"] else "-",
            f(r["ours_prefill_tok_s"]), f(r["prefill_ratio"], 2),
            "-" if r["ours_prefill_bound_tok_s"] is None else
            f"{r['ours_prefill_bound_tok_s']:.0f} ({f(r['prefill_bound_ratio'], 2)})",
            f(r["llama_decode_tok_s"]), f(r["ours_decode_full_tok_s"]), f(r["decode_full_ratio"], 2),
            f(r["ours_decode_compresskv_tok_s"]), f(r["decode_compresskv_ratio"], 2),
            "-" if not r["ours_peak_rss_bytes"] else f"{r['ours_peak_rss_bytes'] / 2**20:.0f} MiB",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for i, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\n{a.model} ({gguf.name}), {a.threads} threads, tokens/s; per round the mean of "
          f"llama-bench's {a.repeats} repeats and the median of ours, then the median over "
          f"{a.rounds} interleaved rounds (ratios formed within each round); "
          f"ours: {result['device']}; "
          f"llama.cpp {result['llama_build']}. Ratio = ours / llama.cpp. f32 roofline: our "
          "prefill's multiply-adds at the f32 FMA peak measured in the same run (ratio: over "
          "llama.cpp's prefill).")
    if repack_note:
        print(f"Note: {repack_note}. With repacking, its decode with no context (no prompt "
              f"matmul, so it runs): {f(repacked_decode0)} tok/s.")
    g = lambda v: "[" + ", ".join(f(x, 2) for x in v) + "]"
    for r in rows:
        print(f"{r['length']} tokens, ratios per round: prefill {g(r['prefill_ratio_per_round'])}, "
              f"decode full {g(r['decode_full_ratio_per_round'])}, decode compresskv "
              f"{g(r['decode_compresskv_ratio_per_round'])}")


if __name__ == "__main__":
    main()
