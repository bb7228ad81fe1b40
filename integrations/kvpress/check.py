"""Checks `CompressKVPress` against the `compresskv` runtime's kept positions on tiny models.

For each model and profile variant: a hand-made profile (`compresskv profile import-paper` with
a seeded head ranking and layer errors written here: tiny random-weight models have no shipped
profile, and a calibration run on them scores every head 0), its export (`profile export`),
then per budget the runtime's selection (`generate --precision exact --method compresskv
--json --kept-positions`) and the press's on the same prompt token ids in HF transformers
(float32, CPU). Prints per layer the exact-set agreement and the Jaccard index and exits 1 on
any mismatch. CompressKV: arXiv 2508.02401. Run through `check.sh`, which builds the venv.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache

from compresskv_kvpress import CompressKVPress, load_export

#: Profile variants: the paper's defaults, then the knobs beyond the paper (several scoring
#: heads across both KV groups, other kernels and windows, `mix`, `union`) set in the
#: profile's defaults. Three scoring heads make the order of their float32 sum matter.
VARIANTS: dict[str, dict[str, str]] = {
    "paper": {},
    "srh2-k7-mix": {"srh_heads": "2", "kernel": "7", "mix": "0.25"},
    "srh2-union": {"srh_heads": "2", "union": "0.5"},
    "srh3-w16-k3-mix": {"srh_heads": "3", "window": "16", "kernel": "3", "mix": "0.3"},
}


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def make_profile(bin_: str, model: Path, work: Path, variant: str, seed: int) -> Path:
    """A profile of `model` from a seeded SRH ranking and layer errors, with `variant`'s
    defaults."""
    cfg = json.loads((model / "config.json").read_text())
    n_layers, n_heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    rng = random.Random(seed)
    heads = work / "tiny_head_idx.json"
    heads.write_text(json.dumps({str(l): rng.sample(range(n_heads), n_heads) for l in range(n_layers)}))
    # Sliding-window layers (Gemma 3's) get no error share: the runtime keeps them whole
    # (`--sliding keep`), and a plan compresses exactly the layers with a share.
    types = cfg.get("layer_types") or ["full_attention"] * n_layers
    errs = [rng.uniform(0.1, 1.0) if ty == "full_attention" else 0.0 for ty in types]
    layers = work / "tiny_layer_score.jsonl"
    layers.write_text(json.dumps({"synthetic": errs, "avg_score": errs}))
    ron = work / f"{model.name}-{variant}.ron"
    run([bin_, "profile", "import-paper", "--heads", str(heads), "--layers", str(layers),
         "--config", str(model / "config.json"), "--model-id", f"tiny/{model.name}",
         "--out", str(ron)])
    text = ron.read_text()
    for key, value in VARIANTS[variant].items():
        text, n = re.subn(rf"(\n        {key}: )[^,]+,", rf"\g<1>{value},", text, count=1)
        assert n == 1, f"no `{key}` in the defaults of {ron}"
    ron.write_text(text)
    return ron


def hf_kept(model, ids: list[int], press: CompressKVPress) -> dict[int, list[int]]:
    """The press's kept positions per compressed layer after one prefill of `ids`."""
    with torch.no_grad(), press(model):
        model(torch.tensor([ids]), past_key_values=DynamicCache(config=model.config), use_cache=True)
    return {l: k[0].tolist() for l, k in press.kept_positions.items()}


def cut_margin(scores: torch.Tensor, budget: int, window: int) -> float:
    """Relative score gap between the last entry kept and the first dropped (before the
    window): near 0, float rounding may decide the cut. A `union` plan's scores are rank-derived:
    its exact ties (0) are broken by position on both sides, not by rounding."""
    s = torch.sort(scores[: scores.shape[0] - window], descending=True).values
    k = budget - window
    if k >= s.shape[0]:
        return math.inf
    return float((s[k - 1] - s[k]) / s[k - 1].abs().clamp_min(1e-30))


def wrong_head_plan(doc: dict, budget: int) -> dict:
    """`doc` with the plan at `budget` scoring every layer with its lowest-ranked SRH head, for
    the control: a press scoring with the wrong heads must disagree with the runtime."""
    doc = copy.deepcopy(doc)
    for plan in doc["plans"]:
        if plan["budget"] == budget:
            plan["scoring_heads"] = [[min(range(len(s)), key=lambda h: (s[h], -h))]
                                     for s in doc["srh_scores"]]
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the compresskv binary")
    ap.add_argument("--tiny", required=True, type=Path, help="shared/reference/tiny")
    ap.add_argument("--models", default="tiny-llama,tiny-qwen2,tiny-mistral,tiny-qwen3,tiny-gemma3")
    ap.add_argument("--budgets", default="48,96")
    ap.add_argument("--prompt-chars", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    prompt = (args.tiny / "train_text.txt").read_text()[: args.prompt_chars]
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("kvpress").setLevel(logging.ERROR)  # "not tested" for Gemma3ForCausalLM
    rows, bad, control, control_n, tokens = [], 0, [], 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prompt.txt").write_text(prompt)
        for name in args.models.split(","):
            model_dir = args.tiny / name
            hf = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation="eager"
            ).eval()
            for variant in VARIANTS:
                ron = make_profile(args.bin, model_dir, work, variant, args.seed)
                export = work / f"{name}-{variant}.json"
                run([args.bin, "profile", "export", str(ron), "--budgets", args.budgets,
                     "--out", str(export)])
                doc = load_export(export)
                for b in budgets:
                    ours = json.loads(run([
                        args.bin, "--precision", "exact", "generate", "--model", str(model_dir),
                        "--prompt-file", str(work / "prompt.txt"), "--method", "compresskv",
                        "--budget", str(b), "--profile", str(ron), "--max-new-tokens", "1",
                        "--json", "--kept-positions"]))
                    ids, t = ours["prompt_token_ids"], ours["prompt_tokens"]
                    tokens[name] = t
                    press = CompressKVPress(export=doc, budget=b)
                    theirs = hf_kept(hf, ids, press)
                    if variant == "paper":
                        wrong = hf_kept(hf, ids, CompressKVPress(export=wrong_head_plan(doc, b), budget=b))
                        control.append(sum(
                            wrong.get(l) == sorted(ours["kept_positions"][l][0]) for l in wrong))
                        control_n += len(wrong)
                    plan = next(p for p in doc["plans"] if p["budget"] == b)
                    for l, per_head in enumerate(ours["kept_positions"]):
                        if plan["layer_budgets"][l] is None:
                            # Kept whole on both sides (a sliding layer holds its own window).
                            assert l not in theirs, f"the press compressed kept layer {l}"
                            continue
                        # The press records the layers it compressed; the others kept all.
                        hf_set = set(theirs.get(l, range(t)))
                        sets = [set(p) for p in per_head]
                        same = all(s == hf_set for s in sets)
                        bad += not same
                        jac = min(len(s & hf_set) / len(s | hf_set) for s in sets)
                        only_rt = sorted(set().union(*sets) - hf_set)
                        only_hf = sorted(hf_set - set.intersection(*sets))
                        margin = (cut_margin(press.scores[l][0], plan["layer_budgets"][l],
                                             plan["settings"]["window"])
                                  if l in press.scores else math.inf)
                        rows.append((name, variant, b, l, plan["layer_budgets"][l],
                                     plan["scoring_heads"][l], len(sets[0]), len(hf_set), same,
                                     jac, margin, only_rt, only_hf))
    counts = ", ".join(f"{n} {c}" for n, c in tokens.items())
    print(f"prompt tokens: {counts}; runtime --precision exact vs HF transformers float32 CPU + "
          "CompressKVPress")
    print("| model | variant | budget | layer | layer budget | scoring heads "
          "| kept (runtime / press) | same set, every KV head | Jaccard | cut margin "
          "| only runtime | only press |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} / {r[7]} "
              f"| {'yes' if r[8] else 'NO'} | {r[9]:.3f} | {r[10]:.1e} | {r[11] or ''} "
              f"| {r[12] or ''} |")
    print(f"{len(rows) - bad} of {len(rows)} layer sets identical (every KV head); smallest "
          f"cut margin {min(r[10] for r in rows):.1e}")
    print(f"control, each layer scored by its lowest-ranked SRH head instead: {sum(control)} of "
          f"{control_n} layer sets identical (must be fewer than all)")
    if control_n and sum(control) == control_n:
        print("the control agrees everywhere: this comparison cannot tell heads apart")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
