//! The shared GQA decoder: embedding → N × (attention + gated MLP) → norm → LM head.
//!
//! Prefill runs in chunks (so sliding-layer masks stay `[C, W + C]` and activations stay small)
//! through the backend's fused attention; decode appends one token at a time. Only the logits
//! that are asked for are computed (the LM head is the costliest matmul of a small model).

use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;

use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

use super::act::{Act, Heads};
use super::layers::{Linear, LinearWeight, Mlp, RmsNorm, RopeTables, forward_many_host};
use super::load::Weights;
use super::{AttentionEvent, CausalLM, ForwardCtx, Slot, family};
use crate::cache::{HeadGroup, KvCache, LayerCache};
use crate::device::{BackendKind, RuntimeDevice};
use crate::kernels::attention::{self as kernel_attention, AttnParams};
use crate::spec::{AttentionKind, ModelSpec, RopeSpec};
use crate::weights::{LoadError, WeightSource};

/// Default prefill chunk (tokens). Large enough for efficient GEMMs, small enough that
/// sliding-window masks and MLP activations stay a few MB.
pub const DEFAULT_PREFILL_CHUNK: usize = 1024;

#[derive(Clone, Debug)]
pub struct Attention {
    pub layer: usize,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    pub softcap: Option<f64>,
    pub kind: AttentionKind,
    pub(super) backend: BackendKind,
}

impl Attention {
    /// Attention of `q` `[1, H_q, S, D]` (positions `q_pos`) over a layer's cached entries,
    /// group by group (one call when the layer is not ragged). Returns `[1, H_q, S, D]`.
    pub fn attend(&self, q: &Tensor<4>, q_pos: &[i64], cache: &LayerCache) -> Tensor<4> {
        let outs: Vec<Tensor<4>> = cache
            .groups()
            .iter()
            .map(|g| self.attend_group(q, q_pos, g))
            .collect();
        if outs.len() == 1 {
            outs.into_iter().next().unwrap()
        } else {
            Tensor::cat(outs, 1)
        }
    }

    /// Attention of the query heads served by `g` over `g`'s entries.
    pub fn attend_group(&self, q: &Tensor<4>, q_pos: &[i64], g: &HeadGroup) -> Tensor<4> {
        let group = self.n_heads / self.n_kv_heads;
        let (h0, nh) = (g.first_head * group, g.n_heads() * group);
        let q = if nh == self.n_heads {
            q.clone()
        } else {
            q.clone().narrow(1, h0, nh)
        };
        let s = q_pos.len();
        // `k()`/`v()` hold exactly the group's live entries (an emptied tensor group's stale
        // row is never exposed).
        let (k, v) = (g.k(), g.v());
        // Mask: global layers only need causality, which the fused kernel does bottom-right
        // aligned (every cached entry precedes every new query). Sliding layers have been
        // trimmed to the first query's window; later queries of a chunk need an explicit mask.
        let mut is_causal = s > 1;
        let mut mask = None;
        if let AttentionKind::Sliding(w) = self.kind
            && s > 1
        {
            mask = Some(window_mask(q_pos, &g.positions, Some(w), &q.device()));
            is_causal = false;
        }
        let (q, k, v, scale) = match self.backend {
            BackendKind::Flex => (q, k, v, Some(self.scale)),
            _ => {
                // cubecl kernels index K/V by query head and take the fast path only without
                // a custom scale: repeat K/V heads and fold the scale into q.
                let rep = nh / g.n_heads();
                let (k, v) = if rep > 1 {
                    (repeat_kv(k, rep), repeat_kv(v, rep))
                } else {
                    (k, v)
                };
                let q = q.mul_scalar(self.scale * (self.head_dim as f64).sqrt());
                (q, k, v, None)
            }
        };
        attention(
            q,
            k,
            v,
            mask,
            None,
            AttentionModuleOptions {
                scale,
                softcap: self.softcap,
                is_causal,
            },
        )
    }

    /// Attention probabilities `[1, H_q(g), S, T]` of the query heads served by `g`, with the
    /// causal and sliding-window mask applied. Used for observation-window scoring (S = window,
    /// so no N×N matrix) and by the profiler (S = 1).
    pub fn probs_group(&self, q: &Tensor<4>, q_pos: &[i64], g: &HeadGroup) -> Tensor<4> {
        let group = self.n_heads / self.n_kv_heads;
        let (h0, nh) = (g.first_head * group, g.n_heads() * group);
        let q = q.clone().narrow(1, h0, nh);
        let [_, _, s, d] = q.dims();
        let t = g.len();
        let hk = g.n_heads();
        // [1, hk, G*S, D] x [1, hk, D, T]: no K repeat needed. In f32 whatever the cache holds:
        // the presses rank entries by sums of these probabilities.
        let f32 = burn::tensor::FloatDType::F32;
        let qg = q.reshape([1, hk, group * s, d]).cast(f32);
        let k = g.k().cast(f32);
        let mut scores = qg.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale);
        if let Some(c) = self.softcap {
            scores = scores.div_scalar(c).tanh().mul_scalar(c);
        }
        let scores = scores.reshape([1, nh, s, t]);
        let mask = window_mask(q_pos, &g.positions, self.kind.window(), &scores.device());
        let scores = scores.mask_fill(mask.expand([1, nh, s, t]), f32::NEG_INFINITY);
        softmax(scores, 3)
    }

    /// Output projection of an attention output `[1, H_q, S, D]` → `[1, S, hidden]`.
    pub fn project_out(&self, o: Tensor<4>) -> Tensor<3> {
        let [b, h, s, d] = o.dims();
        self.o.forward(o.swap_dims(1, 2).reshape([b, s, h * d]))
    }

    /// The op-layer form of the output projection.
    fn project_out_heads(&self, o: Heads) -> Act {
        match o {
            Heads::Tensor(t) => Act::Tensor(self.project_out(t)),
            Heads::Host { data, h, s, d } => self.o.apply(Act::Host {
                data: Heads::merge_rows(&data, h, s, d),
                s,
                c: h * d,
            }),
        }
    }

    /// Attention in the op layer: Burn's fused kernel on tensors, the CPU kernel on host rows.
    fn attend_heads(&self, q: &Heads, q_pos: &[i64], cache: &LayerCache) -> Heads {
        match q {
            Heads::Tensor(t) => Heads::Tensor(self.attend(t, q_pos, cache)),
            Heads::Host { data, h, s, d } => Heads::Host {
                data: self.attend_host(data, *s, q_pos, cache),
                h: *h,
                s: *s,
                d: *d,
            },
        }
    }

    /// Flash-style attention of host queries `[H_q, S, D]` over each KV head's own entries:
    /// ragged groups need no padding, and masks are ranges because entries are sorted by
    /// position.
    fn attend_host(&self, q: &[f32], s: usize, q_pos: &[i64], cache: &LayerCache) -> Vec<f32> {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv_heads;
        let mut out = vec![0.0f32; self.n_heads * s * d];
        let params = AttnParams {
            scale: self.scale as f32,
            softcap: self.softcap.map(|c| c as f32),
        };
        let window = self.kind.window();
        // Prefill attention joins the projections on the bf16 tiles where they run there.
        let attend = if self.q.kernel().is_some_and(|m| m.prefill_on_tiles()) {
            kernel_attention::attend_prefill_tiles::<half::f16>
        } else {
            kernel_attention::attend::<half::f16>
        };
        for g in cache.groups() {
            let ranges: Vec<(usize, usize)> = q_pos
                .iter()
                .map(|&qp| {
                    let hi = g.positions.partition_point(|&p| p <= qp);
                    let lo =
                        window.map_or(0, |w| g.positions.partition_point(|&p| p <= qp - w as i64));
                    (lo.min(hi), hi)
                })
                .collect();
            for h in 0..g.n_heads() {
                let (k, v) = g
                    .host_rows(h)
                    .expect("the kernel path fills the cache on the host");
                let rows = (g.first_head + h) * group * s..(g.first_head + h + 1) * group * s;
                attend(
                    &q[rows.start * d..rows.end * d],
                    k,
                    v,
                    d,
                    &params,
                    &|r| ranges[r % s],
                    &mut out[rows.start * d..rows.end * d],
                );
            }
        }
        out
    }

    fn qkv_heads(&self, x: Act, rope: &RopeTables) -> (Heads, Heads, Heads) {
        let (q, k, v) = match x {
            Act::Tensor(t) => {
                let (q, k, v) = self.qkv_raw(t);
                (Heads::Tensor(q), Heads::Tensor(k), Heads::Tensor(v))
            }
            host => {
                let s = host.seq_len();
                let d = self.head_dim;
                let split = |a: Act, h: usize| match a {
                    Act::Host { data, .. } => Heads::split_rows(&data, s, h, d),
                    Act::Tensor(t) => Heads::Tensor(t.reshape([1, s, h, d]).swap_dims(1, 2)),
                };
                let all_kernels = [&self.q, &self.k, &self.v]
                    .iter()
                    .all(|l| l.kernel().is_some());
                match host {
                    Act::Host { data, .. } if all_kernels => {
                        let mut qkv =
                            forward_many_host(&[&self.q, &self.k, &self.v], &data, s).into_iter();
                        let mut next = || qkv.next().unwrap();
                        (
                            Heads::split_rows(&next(), s, self.n_heads, d),
                            Heads::split_rows(&next(), s, self.n_kv_heads, d),
                            Heads::split_rows(&next(), s, self.n_kv_heads, d),
                        )
                    }
                    host => (
                        split(self.q.apply(host.clone()), self.n_heads),
                        split(self.k.apply(host.clone()), self.n_kv_heads),
                        split(self.v.apply(host), self.n_kv_heads),
                    ),
                }
            }
        };
        let q = match &self.q_norm {
            Some(n) => n.apply_heads(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.apply_heads(k),
            None => k,
        };
        (rope.apply_heads(q), rope.apply_heads(k), v)
    }

    /// q, k, v `[1, H, S, D]` before the q/k norms and RoPE.
    fn qkv_raw(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let split = |t: Tensor<3>, h: usize| t.reshape([b, s, h, self.head_dim]).swap_dims(1, 2);
        (
            split(self.q.forward(x.clone()), self.n_heads),
            split(self.k.forward(x.clone()), self.n_kv_heads),
            split(self.v.forward(x), self.n_kv_heads),
        )
    }
}

/// `true` = masked. Query `i` (position `q_pos[i]`) sees key `j` iff `k_pos[j] <= q_pos[i]` and,
/// with a window `w`, `k_pos[j] > q_pos[i] - w`. Built from positions, so it stays right after
/// eviction. Returned as `[1, 1, S, T]`.
pub fn window_mask(
    q_pos: &[i64],
    k_pos: &[i64],
    window: Option<usize>,
    device: &burn::tensor::Device,
) -> Tensor<4, Bool> {
    let (s, t) = (q_pos.len(), k_pos.len());
    let mut m = Vec::with_capacity(s * t);
    for &qp in q_pos {
        let lo = window.map(|w| qp - w as i64).unwrap_or(i64::MIN);
        m.extend(k_pos.iter().map(|&kp| !(kp <= qp && kp > lo)));
    }
    Tensor::<4, Bool>::from_data(TensorData::new(m, [1, 1, s, t]), device)
}

fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, rep, t, d])
        .reshape([b, h * rep, t, d])
}

#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub post_attn_norm: Option<RmsNorm>,
    pub ffn_norm: RmsNorm,
    pub mlp: Mlp,
    pub post_ffn_norm: Option<RmsNorm>,
}

pub struct Transformer {
    spec: ModelSpec,
    device: RuntimeDevice,
    embed: LinearWeight,
    /// Shares the embedding's weight when tied.
    lm_head: Linear,
    tied: bool,
    layers: Vec<DecoderLayer>,
    final_norm: RmsNorm,
    /// Distinct RoPE settings and which one each layer uses (Gemma 3 has two).
    ropes: Vec<RopeSpec>,
    rope_of_layer: Vec<usize>,
    pub prefill_chunk: usize,
    /// sha256 hex of layer 0's attention output projection as stored in the weights file (see
    /// [`Transformer::weight_hash`]).
    weight_hash: Option<String>,
}

impl Transformer {
    pub fn load(
        spec: ModelSpec,
        source: &dyn WeightSource,
        device: &RuntimeDevice,
    ) -> Result<Self, LoadError> {
        spec.validate().map_err(LoadError::Config)?;
        let w = Weights {
            source,
            family: family(spec.architecture),
            spec: &spec,
            device,
            consumed: RefCell::new(HashSet::new()),
        };
        let h = spec.hidden_size;
        let embed = w.take_matrix(Slot::Embed, None, [spec.vocab_size, h])?;
        let (lm_head, tied) = if w.has(Slot::LmHead, None) {
            (w.linear(Slot::LmHead, None, spec.vocab_size, h)?, false)
        } else if spec.tie_embeddings {
            (Linear::new(embed.clone()), true)
        } else {
            return Err(LoadError::MissingTensor {
                name: w.name(Slot::LmHead, None),
                expected: format!(
                    "[{}, {h}] (the config says tie_word_embeddings = false)",
                    spec.vocab_size
                ),
            });
        };
        let layers = (0..spec.n_layers)
            .map(|i| w.layer(i))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = w.norm(Slot::FinalNorm, None, h)?;
        w.check_all_consumed()?;
        // A device reports failures (a buffer over its limits, out of memory) at the next sync:
        // surface them here as a load error rather than at the first read-back.
        device.device.sync().map_err(|e| {
            LoadError::Device(format!(
                "{} could not hold the weights: {e}",
                device.kind.name()
            ))
        })?;

        let (ropes, rope_of_layer) = shared_ropes(&spec);
        // Provenance for profiles: one small tensor that any fine-tune or requantization changes,
        // hashed as stored (so the same weights in another file format hash differently).
        let weight_hash = match source.load_raw(&w.name(Slot::O, Some(0))) {
            Ok(Some(raw)) => Some(crate::store::sha256_hex(&raw.bytes)),
            _ => None,
        };
        Ok(Transformer {
            weight_hash,
            spec,
            device: device.clone(),
            embed,
            lm_head,
            tied,
            layers,
            final_norm,
            ropes,
            rope_of_layer,
            prefill_chunk: std::env::var("COMPRESSKV_PREFILL_CHUNK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_PREFILL_CHUNK),
        })
    }

    /// sha256 hex of layer 0's attention output projection as stored in the weights file (its
    /// block format's bytes), recorded in a profile's fingerprint; `None` if the source cannot
    /// hand out raw bytes.
    pub fn weight_hash(&self) -> Option<&str> {
        self.weight_hash.as_deref()
    }

    /// Bytes of the weight matrices in memory (f32 on the exact path, the stored block format
    /// on the kernel path; a tied LM head counted once).
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| l.weight.byte_len() + l.bias.as_ref().map_or(0, |b| b.dims()[0] * 4);
        let mut n = self.embed.byte_len() + if self.tied { 0 } else { lin(&self.lm_head) };
        for l in &self.layers {
            n += lin(&l.attn.q) + lin(&l.attn.k) + lin(&l.attn.v) + lin(&l.attn.o);
            n += lin(&l.mlp.gate) + lin(&l.mlp.up) + lin(&l.mlp.down);
        }
        n
    }

    /// Weight bytes one decode step reads: every layer's matrices and the LM head (the
    /// embedding lookup reads one row, so an untied input embedding does not count).
    pub fn decode_weight_bytes(&self) -> usize {
        let untied_embed = if self.tied { 0 } else { self.embed.byte_len() };
        self.weight_bytes() - untied_embed
    }

    /// Bytes the LM head reads per decoded token (the dominant decode cost of small models).
    pub fn lm_head_bytes(&self) -> usize {
        self.lm_head.weight.byte_len()
    }

    /// Every weight matrix the forward pass multiplies by, named as in llama.cpp's GGUF files
    /// (`output` is the LM head, tied or not).
    pub fn matrices(&self) -> Vec<(String, &Linear)> {
        let mut all = vec![("output".to_string(), &self.lm_head)];
        for (i, l) in self.layers.iter().enumerate() {
            let (a, m) = (&l.attn, &l.mlp);
            for (name, lin) in [
                ("attn_q", &a.q),
                ("attn_k", &a.k),
                ("attn_v", &a.v),
                ("attn_output", &a.o),
                ("ffn_gate", &m.gate),
                ("ffn_up", &m.up),
                ("ffn_down", &m.down),
            ] {
                all.push((format!("blk.{i}.{name}"), lin));
            }
        }
        all
    }

    /// The matrices the CPU kernels run on, by block format: `(format name, tensors, bytes)`.
    pub fn kernel_formats(&self) -> Vec<(&'static str, usize, usize)> {
        let mut out: Vec<(&'static str, usize, usize)> = Vec::new();
        for (_, l) in self.matrices() {
            let Some(q) = l.kernel() else { continue };
            let name = q.format().name();
            match out.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += q.byte_len();
                }
                None => out.push((name, 1, q.byte_len())),
            }
        }
        out
    }

    fn forward_chunk(
        &self,
        tokens: &[u32],
        start: usize,
        ctx: &mut ForwardCtx<'_>,
        logits_from: Option<usize>,
    ) -> Option<Tensor<2>> {
        let dev = &self.device.device;
        let s = tokens.len();
        let positions: Vec<i64> = (start..start + s).map(|p| p as i64).collect();
        // The kernel path keeps activations on the host from the embedding to the logits.
        let (mut x, tables) = self.embed_at(tokens, &positions);
        if let Some(c) = ctx.capture.as_deref_mut() {
            c.push_positions(&positions);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let a = &layer.attn;
            let (q, k, v) = a.qkv_heads(
                layer.attn_norm.apply(x.clone()),
                &tables[self.rope_of_layer[i]],
            );
            let lc = &mut ctx.cache.layers[i];
            if let AttentionKind::Sliding(w) = a.kind {
                // Entries no query of this chunk can see are gone for good.
                lc.drop_before(start as i64 - w as i64 + 1);
            }
            match (k, v) {
                (Heads::Host { data: k, d, .. }, Heads::Host { data: v, .. }) => {
                    lc.append_host(&k, &v, d, &positions, dev)
                }
                (k, v) => lc.append(k.to_tensor(dev), v.to_tensor(dev), &positions),
            }
            let o = a.attend_heads(&q, &positions, lc);
            if let AttentionKind::Sliding(w) = a.kind {
                // Keep only what the next query (at `start + s`) can see: at most the window.
                lc.drop_before((start + s) as i64 - w as i64 + 1);
            }
            if let Some(obs) = ctx.observer.as_deref_mut()
                && obs.wants(i)
            {
                obs.observe(AttentionEvent {
                    layer: i,
                    queries: &q.to_tensor(dev),
                    query_positions: &positions,
                    cache: lc,
                    attention: a,
                    output: &o.to_tensor(dev),
                });
            }
            if let Some(c) = ctx.capture.as_deref_mut() {
                c.push(i, q.tail_tensor(c.window, dev));
            }
            x = self.after_attention(layer, x, o);
        }
        let from = logits_from?;
        Some(self.logits(x.tail(s - from)))
    }

    /// The scaled token embeddings and, per distinct RoPE setting, the tables of `positions`
    /// (one per token: consecutive in a prefill chunk, each sequence's own in a decode batch).
    fn embed_at(&self, tokens: &[u32], positions: &[i64]) -> (Act, Vec<RopeTables>) {
        let dev = &self.device.device;
        let mut x = self.embed.rows(tokens, dev);
        if let Some(sc) = self.spec.embed_scale {
            x = x.mul_scalar(sc);
        }
        let tables = self
            .ropes
            .iter()
            .map(|r| RopeTables::new(r, self.spec.head_dim, positions, dev))
            .collect();
        (x, tables)
    }

    /// The rest of a layer once its attention output `o` is known: output projection, the
    /// optional post-attention norm, residual, MLP (with its optional post norm), residual.
    fn after_attention(&self, layer: &DecoderLayer, x: Act, o: Heads) -> Act {
        let mut h = layer.attn.project_out_heads(o);
        if let Some(n) = &layer.post_attn_norm {
            h = n.apply(h);
        }
        let x = x + h;
        let mut m = layer.mlp.apply(layer.ffn_norm.apply(x.clone()));
        if let Some(n) = &layer.post_ffn_norm {
            m = n.apply(m);
        }
        x + m
    }

    /// [`CausalLM::forward_batch`] on the CPU kernels: the `B` tokens go through every
    /// row-wise op (norms, projections, MLP, LM head) as one `[B, hidden]` batch, so each weight
    /// block is read once per step for all sequences; RoPE takes each row's own position, and
    /// attention runs per sequence over its own (compressed, ragged) cache.
    fn forward_batch_host(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Vec<Vec<f32>> {
        let dev = &self.device.device;
        let b = tokens.len();
        let positions: Vec<i64> = caches.iter().map(|c| c.next_pos as i64).collect();
        let (mut x, tables) = self.embed_at(tokens, &positions);
        let d = self.spec.head_dim;
        for (i, layer) in self.layers.iter().enumerate() {
            let a = &layer.attn;
            let (q, k, v) = a.qkv_heads(
                layer.attn_norm.apply(x.clone()),
                &tables[self.rope_of_layer[i]],
            );
            let (
                Heads::Host { data: q, .. },
                Heads::Host { data: k, .. },
                Heads::Host { data: v, .. },
            ) = (q, k, v)
            else {
                unreachable!("the kernel path keeps activations on the host")
            };
            // `[H, B, D]` → sequence `j`'s `[H, 1, D]`, and back.
            let row = |data: &[f32], h: usize, j: usize| -> Vec<f32> {
                (0..h)
                    .flat_map(|head| {
                        data[(head * b + j) * d..(head * b + j + 1) * d]
                            .iter()
                            .copied()
                    })
                    .collect()
            };
            // Each sequence's attention over its own cache, the sequences in parallel (each
            // computes exactly what it would alone).
            let per_seq: Vec<Vec<f32>> = caches
                .par_iter_mut()
                .enumerate()
                .map(|(j, cache)| {
                    let (lc, p) = (&mut cache.layers[i], positions[j]);
                    let window = a.kind.window().map(|w| w as i64);
                    if let Some(w) = window {
                        lc.drop_before(p - w + 1);
                    }
                    let (kj, vj) = (row(&k, a.n_kv_heads, j), row(&v, a.n_kv_heads, j));
                    lc.append_host(&kj, &vj, d, &[p], dev);
                    let oj = a.attend_host(&row(&q, a.n_heads, j), 1, &[p], lc);
                    if let Some(w) = window {
                        lc.drop_before(p + 1 - w + 1);
                    }
                    oj
                })
                .collect();
            let mut o = vec![0.0f32; a.n_heads * b * d];
            for (j, oj) in per_seq.iter().enumerate() {
                for head in 0..a.n_heads {
                    o[(head * b + j) * d..(head * b + j + 1) * d]
                        .copy_from_slice(&oj[head * d..(head + 1) * d]);
                }
            }
            let o = Heads::Host {
                data: o,
                h: a.n_heads,
                s: b,
                d,
            };
            x = self.after_attention(layer, x, o);
        }
        for c in caches.iter_mut() {
            c.next_pos += 1;
        }
        // Without a softcap the logits stay on the host: through a Burn tensor they were
        // copied three more times (1 MiB per row of Gemma's vocabulary, every step). A softcap
        // keeps Burn's tanh, so the logits equal `forward`'s bit for bit.
        let logits = match self.lm_head.apply(self.final_norm.apply(x)) {
            Act::Host { data, .. } if self.spec.final_logit_softcap.is_none() => data,
            h => self.logits_of(h),
        };
        logits
            .chunks(self.spec.vocab_size)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// `[1, n, hidden]` → `[n, vocab]`.
    fn logits(&self, x: Act) -> Tensor<2> {
        let n = x.seq_len();
        let x = self.final_norm.apply(x);
        self.softcap(
            self.lm_head
                .apply(x)
                .into_tensor(&self.device.device)
                .reshape([n, self.spec.vocab_size]),
        )
    }

    fn softcap(&self, logits: Tensor<2>) -> Tensor<2> {
        match self.spec.final_logit_softcap {
            Some(c) => logits.div_scalar(c).tanh().mul_scalar(c),
            None => logits,
        }
    }

    /// Softcapped logits of an LM head output that came back as a tensor, on the host.
    fn logits_of(&self, h: Act) -> Vec<f32> {
        let n = h.seq_len();
        self.softcap(
            h.into_tensor(&self.device.device)
                .reshape([n, self.spec.vocab_size]),
        )
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 logits")
    }
}

impl CausalLM for Transformer {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn device(&self) -> &RuntimeDevice {
        &self.device
    }

    fn forward(&self, tokens: &[u32], ctx: &mut ForwardCtx<'_>) -> Tensor<2> {
        assert!(!tokens.is_empty(), "forward needs at least one token");
        let n_logits = ctx.logits_last.clamp(1, tokens.len());
        let first_logit = tokens.len() - n_logits;
        let chunk = self.prefill_chunk.max(1);
        let mut outs = Vec::new();
        let mut off = 0;
        while off < tokens.len() {
            let end = (off + chunk).min(tokens.len());
            let from = (end > first_logit).then(|| first_logit.saturating_sub(off));
            if let Some(l) = self.forward_chunk(&tokens[off..end], ctx.start_pos + off, ctx, from) {
                outs.push(l);
            }
            off = end;
        }
        ctx.start_pos += tokens.len();
        ctx.cache.next_pos = ctx.start_pos;
        if outs.len() == 1 {
            outs.pop().unwrap()
        } else {
            Tensor::cat(outs, 0)
        }
    }

    fn attention(&self, layer: usize) -> &Attention {
        &self.layers[layer].attn
    }

    fn prefill_chunk(&self) -> usize {
        self.prefill_chunk.max(1)
    }

    fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Vec<Vec<f32>> {
        assert_eq!(tokens.len(), caches.len(), "one token per cache");
        if self.device.uses_cpu_kernels() && !tokens.is_empty() {
            return self.forward_batch_host(tokens, caches);
        }
        super::forward_each(self, tokens, caches)
    }

    /// On the CPU kernels, the smallest of the matrices'
    /// [`exact_rows`](crate::kernels::qmatrix::QMatrix::exact_rows) (a dense Burn weight: 4,
    /// what the engine always took); elsewhere sequences step one by one.
    fn exact_batch(&self) -> usize {
        if !self.device.uses_cpu_kernels() {
            return usize::MAX;
        }
        self.matrices()
            .iter()
            .map(|(_, l)| l.kernel().map_or(4, |q| q.exact_rows()))
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// The distinct RoPE settings of the layers and, per layer, which one it uses (their tables
/// are built once each).
fn shared_ropes(spec: &ModelSpec) -> (Vec<RopeSpec>, Vec<usize>) {
    let mut ropes: Vec<RopeSpec> = Vec::new();
    let mut rope_of_layer = Vec::new();
    for l in &spec.layers {
        let idx = match ropes.iter().position(|r| *r == l.rope) {
            Some(i) => i,
            None => {
                ropes.push(l.rope);
                ropes.len() - 1
            }
        };
        rope_of_layer.push(idx);
    }
    (ropes, rope_of_layer)
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Transformer({}, {} layers)",
            self.spec.architecture, self.spec.n_layers
        )
    }
}
