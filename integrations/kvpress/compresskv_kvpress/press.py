"""The CompressKV press: a CompressKV profile export applied at prefill inside HF transformers.

CompressKV ("CompressKV: Semantic Retrieval Heads Know What Tokens are Not Important Before
Generation", arXiv 2508.02401) scores a layer's prompt tokens with the window attention
of that layer's Semantic Retrieval Heads only, and keeps the same tokens for every KV head;
layer budgets follow the per-layer eviction errors. This module does what the `compresskv`
runtime does (`runtime/src/press/compresskv.rs`, `snapkv.rs`, `mod.rs`), step for step, so the
kept positions can be compared token for token (`integrations/kvpress/check.py`):

1. the last `window` prompt queries (after RoPE) attend to all prompt keys, causal mask,
   softmax in float32, per query head;
2. summed over the window queries, row by row; the entries before the window are
   average-pooled with `kernel` (stride 1, zero padding counted, as `avg_pool1d(k, 1, k // 2)`),
   the window's entries keep their sums;
3. averaged over the plan's `scoring_heads` of the layer (query heads; with GQA a query head
   `h` reads KV head `h // (H_q / H_kv)`), added in descending SRH score as the runtime adds
   them, blended with all heads by `mix`, or merged with the all-heads ranking by `union`;
4. the top `layer_budget − window` entries before the window (ties: the lower position), plus
   the window, for every KV head; a layer whose plan entry is `null` is kept whole, and nothing
   is compressed when the prompt is not longer than the budget.

Every sum accumulates in float32 in the runtime's order, one term after another (torch's
reductions group the terms otherwise, and a cut between near-equal scores can turn on the
last bit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kvpress.presses.base_press import BasePress
from kvpress.utils import get_prerope_query_states
from torch import nn
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

EXPORT_SCHEMA = "compresskv.profile-export"
EXPORT_VERSION = 1
#: The setting keys this press implements; any other key in a plan's settings is refused.
KNOWN_SETTINGS = {"srh_heads", "window", "kernel", "mix", "union", "error_weight"}


def load_export(path: str | Path) -> dict[str, Any]:
    """Reads a `compresskv profile export` document, refusing another schema or version."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != EXPORT_SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r} is not {EXPORT_SCHEMA!r}")
    if doc.get("version") != EXPORT_VERSION:
        raise ValueError(
            f"{path}: export version {doc.get('version')} is not {EXPORT_VERSION}, the one this "
            "press reads: export again with a matching compresskv, or update compresskv_kvpress"
        )
    return doc


def sum_in_order(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """`rows` added one after another, as the runtime's loops add them."""
    acc = torch.zeros_like(rows[0])
    for r in rows:
        acc = acc + r
    return acc


def pooled_prefix_sum(probs: torch.Tensor, kernel: int, window: int) -> torch.Tensor:
    """`[..., W, T]` window probabilities → `[..., T]`: summed over the window rows, the first
    `T − window` entries average-pooled (SnapKV / CompressKV pool only the entries a selection
    chooses among, so the always-kept window does not leak into its neighbours)."""
    s = sum_in_order(probs.unbind(dim=-2))
    prefix = s.shape[-1] - min(window, s.shape[-1])
    head = s[..., :prefix]
    if kernel > 1:
        lead = head.shape[:-1]
        head = F.avg_pool1d(
            head.reshape(-1, 1, prefix), kernel_size=kernel, stride=1, padding=kernel // 2
        ).reshape(*lead, prefix)
    return torch.cat([head, s[..., prefix:]], dim=-1)


def rank_union(srh: torch.Tensor, all_heads: torch.Tensor, u: float, window: int) -> torch.Tensor:
    """The runtime's `rank_union`: entry `i` before the window scores
    `−min(rank_srh(i) / (1 − u), rank_all(i) / u)`, so the top `k` is the top `(1 − u)·k` of the
    SRH ranking plus the top `u·k` of the all-heads ranking; the window scores highest."""
    t = srh.shape[-1]
    prefix = t - min(window, t)

    def ranks(s: torch.Tensor) -> torch.Tensor:
        order = torch.sort(s[:prefix], descending=True, stable=True).indices
        r = torch.empty(prefix, dtype=torch.float64)
        r[order] = torch.arange(prefix, dtype=torch.float64)
        return r

    inf = torch.full((prefix,), math.inf, dtype=torch.float64)
    a = ranks(srh) / (1.0 - u) if u < 1.0 else inf
    b = ranks(all_heads) / u if u > 0.0 else inf
    out = (-torch.minimum(a, b)).to(torch.float32)
    top = torch.full((t - prefix,), torch.finfo(torch.float32).max)
    return torch.cat([out, top])


def select_top(scores: torch.Tensor, budget: int, window: int) -> torch.Tensor:
    """Positions kept from `[T]` scores: the best `budget − window` before the window (a stable
    descending sort, so ties go to the lower position, as the runtime's `select_top`), plus the
    window, ascending."""
    t = scores.shape[-1]
    if budget >= t:
        return torch.arange(t)
    window = min(window, budget)
    prefix = t - window
    best = torch.sort(scores[:prefix], descending=True, stable=True).indices[: budget - window]
    return torch.sort(torch.cat([best, torch.arange(prefix, t)])).values


@dataclass
class CompressKVPress(BasePress):
    """CompressKV's selection from a profile export, at one exported mean `budget`.

    `export` is the path of (or the parsed) `compresskv profile export` document; `budget` must
    be one of its plans' budgets (export with `--budgets` to add one). After a forward pass,
    `kept_positions[layer]` holds the kept prompt positions, `[batch, kept]` (the same for every
    KV head), for the layers the plan compressed.
    """

    export: str | Path | dict[str, Any] = ""
    budget: int = 0
    kept_positions: dict[int, torch.Tensor] = field(default_factory=dict, init=False)
    #: Per compressed layer, the `[batch, T]` scores the selection ranked (to see how near a
    #: tie the cut was when two engines disagree).
    scores: dict[int, torch.Tensor] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        doc = self.export if isinstance(self.export, dict) else load_export(self.export)
        plans = {p["budget"]: p for p in doc["plans"]}
        if self.budget not in plans:
            raise ValueError(
                f"the export has plans for budgets {sorted(plans)}, not {self.budget}: run "
                f"`compresskv profile export ... --budgets {self.budget}`"
            )
        self.doc = doc
        self.plan = plans[self.budget]
        s = self.plan["settings"]
        unknown = set(s) - KNOWN_SETTINGS
        if unknown:
            raise NotImplementedError(
                f"the plan's settings {sorted(unknown)} are not implemented by this press"
            )
        if s["window"] < 1 or s["kernel"] < 1 or s["kernel"] % 2 == 0:
            raise ValueError(
                f"window {s['window']} / kernel {s['kernel']}: need window ≥ 1 and an odd kernel"
            )
        if not (0.0 <= s["mix"] <= 1.0 and 0.0 <= s["union"] <= 1.0):
            raise ValueError(f"mix {s['mix']} / union {s['union']} must be in [0, 1]")
        # The runtime adds a layer's scoring heads in its ranking's order: descending SRH
        # score, ties to the lower head.
        srh = doc["srh_scores"]
        self.scoring_heads: list[list[int]] = [
            sorted(heads, key=lambda h: (-srh[layer][h], h))
            for layer, heads in enumerate(self.plan["scoring_heads"])
        ]
        self.window: int = s["window"]
        self.kernel: int = s["kernel"]
        self.mix: float = float(s["mix"])
        self.union: float = float(s["union"])

    def post_init_from_model(self, model: nn.Module) -> None:
        """Refuses a model whose shape is not the profile's (the heads would mean nothing)."""
        fp, cfg = self.doc["fingerprint"], model.config
        cfg = getattr(cfg, "text_config", cfg)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        have = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, head_dim)
        want = (fp["n_layers"], fp["n_heads"], fp["n_kv_heads"], fp["head_dim"])
        if have != want:
            raise ValueError(
                f"the profile of {self.doc['model_id']} is for layers/heads/KV heads/head dim "
                f"{want}, the model has {have}: export the profile of this model"
            )
        self.kept_positions.clear()
        self.scores.clear()

    def window_probs(
        self, module: nn.Module, hidden_states: torch.Tensor, keys: torch.Tensor, kwargs: dict
    ) -> torch.Tensor:
        """`[B, H_q, W, T]` float32 attention of the last `window` prompt queries over all prompt
        keys (causal), with the layer's own scaling and logit soft-capping."""
        w, t = self.window, keys.shape[2]
        q = get_prerope_query_states(module, hidden_states[:, -w:]).float()
        cos, sin = kwargs["position_embeddings"]
        cos, sin = cos[:, -w:].unsqueeze(1).float(), sin[:, -w:].unsqueeze(1).float()
        q = q * cos + rotate_half(q) * sin
        k = repeat_kv(keys.float(), q.shape[1] // keys.shape[1])
        logits = torch.matmul(q, k.transpose(2, 3)) * module.scaling
        cap = getattr(module.config, "attn_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        mask = torch.triu(torch.ones(w, t, dtype=torch.bool), diagonal=t - w + 1)
        logits = logits.masked_fill(mask, float("-inf"))
        return torch.softmax(logits, dim=-1, dtype=torch.float32)

    def layer_scores(self, per_q: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """`[H_q, T]` pooled scores of one sequence → `[T]`: the mean over `heads` (in the order
        given), blended by `mix` or merged by `union` with the all-heads mean (the runtime's
        `CompressKv::score`)."""
        n = per_q.shape[0]
        srh = sum_in_order([per_q[h] for h in heads]) / len(heads)
        all_heads = sum_in_order(per_q.unbind(0)) / n
        if self.mix > 0.0:
            srh = (1.0 - self.mix) * srh + self.mix * all_heads
        if self.union <= 0.0 or len(heads) == n:
            return srh
        return rank_union(srh, all_heads, self.union, self.window)

    def compress(
        self,
        module: nn.Module,
        hidden_states: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attentions: torch.Tensor,
        kwargs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = module.layer_idx
        budget = self.plan["layer_budgets"][layer]
        t = keys.shape[2]
        # The runtime compresses nothing when the prompt fits the mean budget, and no layer
        # that already fits its own.
        if budget is None or t <= self.budget or t <= budget:
            return keys, values
        if getattr(module, "sliding_window", None) or getattr(module, "is_sliding", False):
            raise NotImplementedError(
                f"layer {layer} is a sliding-window layer the plan compresses (an export made "
                "with `--sliding compress`?): this press scores full-attention layers only"
            )
        per_q = pooled_prefix_sum(
            self.window_probs(module, hidden_states, keys, kwargs), self.kernel, self.window
        )
        heads = self.scoring_heads[layer]
        scores = torch.stack([self.layer_scores(per_q[b], heads) for b in range(per_q.shape[0])])
        kept = torch.stack([select_top(s, budget, self.window) for s in scores])
        self.kept_positions[layer], self.scores[layer] = kept, scores
        idx = kept.to(keys.device)[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
        return keys.gather(2, idx).contiguous(), values.gather(2, idx).contiguous()
