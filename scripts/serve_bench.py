"""Load test for `compresskv serve` (or llama.cpp's `llama-server`, `--engine llama`): N
concurrent streamed completions, one JSON report.

Per request it measures the time to first token (TTFT), the time per output token after the
first (TPOT) and the end-to-end latency; over the run the aggregate generated tokens/s and the
most sessions seen running at once (`/slots`). Prompts are haystack text cut to about
`--prompt-tokens` tokens with the server's own tokenizer (`/tokenize`). Loopback only, bounded
in count and time. Standard library only.

    compresskv serve --kv-mem 1 --parallel 8 &
    python3 scripts/serve_bench.py --concurrency 1,4,8 --prompt-tokens 2048 --out report.json

With `--server-pid PID` the report adds the server's peak resident memory (VmHWM), so runs of
two engines can be compared at equal memory. `--engine llama` reads llama-server's `/slots`
(a list, `is_processing`) and counts streamed tokens where it sends no `usage`; no
`kv_compression` field is sent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path


def post(base: str, path: str, body: dict, timeout: float):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return urllib.request.urlopen(req, timeout=timeout)


def get_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def count_tokens(base: str, text: str) -> int:
    with post(base, "/tokenize", {"content": text}, 60) as r:
        return len(json.load(r)["tokens"])


def prompt_of(base: str, words: list[str], tokens: int, salt: int) -> tuple[str, int]:
    """Haystack text of about `tokens` tokens (a binary search on the word count) and its
    token count, each request's text rotated by `salt` so no two prompts are the same."""
    words = words[salt * 37 % len(words):] + words[: salt * 37 % len(words)]
    lo, hi = 1, len(words)
    found = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        n = count_tokens(base, " ".join(words[:mid]))
        if n <= tokens:
            lo, found = mid, n
        else:
            hi = mid - 1
    text = " ".join(words[:lo])
    return text, found if found is not None else count_tokens(base, text)


def one(base: str, prompt: str, args, out: dict) -> None:
    body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}
    if args.engine == "compresskv":
        body["kv_compression"] = {"method": args.method, "budget": args.budget}
    else:
        body["n_predict"] = args.max_tokens
    t0 = time.perf_counter()
    stamps = []
    with post(base, "/v1/completions", body, args.timeout) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"][0].get("text"):
                stamps.append(time.perf_counter())
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
                out["kv_compression"] = chunk.get("kv_compression")
    end = time.perf_counter()
    out["ttft_s"] = stamps[0] - t0 if stamps else None
    n = out.get("usage", {}).get("completion_tokens", len(stamps))
    out.setdefault("usage", {"completion_tokens": n, "prompt_tokens": out["prompt_tokens"]})
    out["tpot_s"] = (end - stamps[0]) / (n - 1) if stamps and n > 1 else None
    out["latency_s"] = end - t0
    out["completion_tokens"] = n


def pct(xs: list[float], p: float) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def running(base: str, engine: str) -> int:
    """Sessions the server is working on now."""
    slots = get_json(base, "/slots")
    if engine == "llama":
        return sum(1 for s in slots if s.get("is_processing"))
    return len(slots["slots"])


def run(base: str, words: list[str], c: int, args) -> dict:
    built = [prompt_of(base, words, args.prompt_tokens, i) for i in range(c)]
    prompts = [p for p, _ in built]
    results = [{"prompt_tokens": n} for _, n in built]
    peak = {"active": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak["active"] = max(peak["active"], running(base, args.engine))
            time.sleep(0.05)

    w = threading.Thread(target=watch)
    w.start()
    t0 = time.perf_counter()
    ts = [threading.Thread(target=one, args=(base, p, args, r)) for p, r in zip(prompts, results)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    done.set()
    w.join()
    tokens = sum(r.get("completion_tokens", 0) for r in results)
    tpots = [r["tpot_s"] for r in results if r["tpot_s"]]
    return {
        "concurrency": c, "prompt_tokens": [r["usage"]["prompt_tokens"] for r in results],
        "max_sessions_running": peak["active"], "wall_s": wall,
        "ttft_s": {"p50": pct([r["ttft_s"] for r in results], 50),
                   "p95": pct([r["ttft_s"] for r in results], 95)},
        "tpot_s": {"p50": pct(tpots, 50), "p95": pct(tpots, 95)},
        "latency_s": {"p50": pct([r["latency_s"] for r in results], 50),
                      "p95": pct([r["latency_s"] for r in results], 95)},
        "aggregate_tokens_per_s": tokens / wall,
        "decode_tokens_per_s_per_session": statistics.mean(1 / t for t in tpots) if tpots else None,
        "aggregate_decode_tokens_per_s": sum(1 / t for t in tpots) if tpots else None,
        "kv_compression": results[0].get("kv_compression"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--haystack", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/compresskv-paper/needle/PaulGrahamEssays"))
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--prompt-tokens", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--method", default="compresskv")
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--engine", choices=["compresskv", "llama"], default="compresskv")
    ap.add_argument("--server-pid", type=int, help="report this process's peak RSS (VmHWM)")
    ap.add_argument("--out")
    args = ap.parse_args()
    hay = Path(args.haystack)
    files = sorted(hay.glob("*.txt")) if hay.is_dir() else [hay]
    words = " ".join(f.read_text() for f in files).split()
    if not words:
        raise SystemExit(f"--haystack {hay}: no text found")
    props = get_json(args.base_url, "/props")
    runs = [run(args.base_url, words, int(c), args) for c in args.concurrency.split(",")]
    report = {"engine": args.engine, "server": props,
              "method": args.method if args.engine == "compresskv" else "full",
              "budget": args.budget if args.engine == "compresskv" else None,
              "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "runs": runs}
    if args.server_pid:
        status = Path(f"/proc/{args.server_pid}/status").read_text()
        hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        report["server_peak_rss_mib"] = int(hwm.split()[1]) / 1024
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
