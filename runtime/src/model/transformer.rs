//! The shared GQA decoder: embedding → N × (attention + gated MLP) → norm → LM head.
//!
//! Prefill runs in chunks (so sliding-layer masks stay `[C, W + C]` and activations stay small)
//! through the backend's fused attention; decode appends one token at a time. Only the logits
//! that are asked for are computed (the LM head is the costliest matmul of a small model).

use std::cell::RefCell;
use std::collections::HashSet;

use burn::tensor::activation::softmax;
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::layers::{Linear, Mlp, RmsNorm, RopeTables};
use super::{AttentionEvent, CausalLM, Family, ForwardCtx, Slot, family, gguf_name};
use crate::cache::{HeadGroup, LayerCache};
use crate::device::{BackendKind, RuntimeDevice};
use crate::loader::{LoadError, SourceKind, WeightSource};
use crate::spec::{AttentionKind, ModelSpec, RopeSpec};

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
    backend: BackendKind,
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
        let t = g.len();
        let (k, v) = if g.k.dims()[2] == t {
            (g.k.clone(), g.v.clone())
        } else {
            // A group that was emptied and refilled never reaches here; guard anyway.
            let d = g.k.dims()[2];
            (
                g.k.clone().narrow(2, d - t, t),
                g.v.clone().narrow(2, d - t, t),
            )
        };
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
        // [1, hk, G*S, D] x [1, hk, D, T]: no K repeat needed.
        let qg = q.reshape([1, hk, group * s, d]);
        let mut scores = qg
            .matmul(g.k.clone().swap_dims(2, 3))
            .mul_scalar(self.scale);
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

    fn qkv(&self, x: Tensor<3>, rope: &RopeTables) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let split = |t: Tensor<3>, h: usize| t.reshape([b, s, h, self.head_dim]).swap_dims(1, 2);
        let mut q = split(self.q.forward(x.clone()), self.n_heads);
        let mut k = split(self.k.forward(x.clone()), self.n_kv_heads);
        let v = split(self.v.forward(x), self.n_kv_heads);
        if let Some(n) = &self.q_norm {
            q = n.forward(q);
        }
        if let Some(n) = &self.k_norm {
            k = n.forward(k);
        }
        (rope.apply(q), rope.apply(k), v)
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
    embed: Tensor<2>,
    /// `None` when tied to the embedding.
    lm_head: Option<Tensor<2>>,
    layers: Vec<DecoderLayer>,
    final_norm: RmsNorm,
    /// Distinct RoPE settings and which one each layer uses (Gemma 3 has two).
    ropes: Vec<RopeSpec>,
    rope_of_layer: Vec<usize>,
    pub prefill_chunk: usize,
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
        let (h, d) = (spec.hidden_size, spec.head_dim);
        let norm = |slot, layer, n| -> Result<RmsNorm, LoadError> {
            Ok(RmsNorm {
                gamma: w.take::<1>(slot, layer, [n])?,
                eps: spec.rms_norm_eps,
            })
        };
        let lin = |slot, layer, out: usize, inp: usize| -> Result<Linear, LoadError> {
            Ok(Linear {
                weight: w.take::<2>(slot, layer, [out, inp])?,
                bias: None,
            })
        };
        let embed = w.take::<2>(Slot::Embed, None, [spec.vocab_size, h])?;
        let lm_head = if w.has(Slot::LmHead, None) {
            Some(w.take::<2>(Slot::LmHead, None, [spec.vocab_size, h])?)
        } else if spec.tie_embeddings {
            None
        } else {
            return Err(LoadError::MissingTensor {
                name: w.name(Slot::LmHead, None),
                expected: format!(
                    "[{}, {h}] (the config says tie_word_embeddings = false)",
                    spec.vocab_size
                ),
            });
        };
        let mut layers = Vec::with_capacity(spec.n_layers);
        for i in 0..spec.n_layers {
            let li = Some(i);
            let mut q = lin(Slot::Q, li, spec.q_dim(), h)?;
            let mut k = lin(Slot::K, li, spec.kv_dim(), h)?;
            let mut v = lin(Slot::V, li, spec.kv_dim(), h)?;
            if spec.qkv_bias {
                q.bias = Some(w.take::<1>(Slot::QBias, li, [spec.q_dim()])?);
                k.bias = Some(w.take::<1>(Slot::KBias, li, [spec.kv_dim()])?);
                v.bias = Some(w.take::<1>(Slot::VBias, li, [spec.kv_dim()])?);
            }
            let (q_norm, k_norm) = if spec.qk_norm {
                (
                    Some(norm(Slot::QNorm, li, d)?),
                    Some(norm(Slot::KNorm, li, d)?),
                )
            } else {
                (None, None)
            };
            let attn = Attention {
                layer: i,
                q,
                k,
                v,
                o: lin(Slot::O, li, h, spec.q_dim())?,
                q_norm,
                k_norm,
                n_heads: spec.n_heads,
                n_kv_heads: spec.n_kv_heads,
                head_dim: d,
                scale: spec.attn_scale,
                softcap: spec.attn_logit_softcap,
                kind: spec.layers[i].attention,
                backend: device.kind,
            };
            let sandwich = spec.sandwich_norms;
            layers.push(DecoderLayer {
                attn_norm: norm(Slot::AttnNorm, li, h)?,
                attn,
                post_attn_norm: if sandwich {
                    Some(norm(Slot::PostAttnNorm, li, h)?)
                } else {
                    None
                },
                ffn_norm: norm(Slot::FfnNorm, li, h)?,
                mlp: Mlp {
                    gate: lin(Slot::Gate, li, spec.intermediate_size, h)?,
                    up: lin(Slot::Up, li, spec.intermediate_size, h)?,
                    down: lin(Slot::Down, li, h, spec.intermediate_size)?,
                    activation: spec.activation,
                },
                post_ffn_norm: if sandwich {
                    Some(norm(Slot::PostFfnNorm, li, h)?)
                } else {
                    None
                },
            });
        }
        let final_norm = norm(Slot::FinalNorm, None, h)?;
        w.check_all_consumed()?;

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
        Ok(Transformer {
            spec,
            device: device.clone(),
            embed,
            lm_head,
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

    /// Bytes of the weights held on the device (f32).
    pub fn weight_bytes(&self) -> usize {
        let n2 = |t: &Tensor<2>| t.dims()[0] * t.dims()[1];
        let lin = |l: &Linear| n2(&l.weight) + l.bias.as_ref().map_or(0, |b| b.dims()[0]);
        let mut n = n2(&self.embed) + self.lm_head.as_ref().map_or(0, n2);
        for l in &self.layers {
            n += lin(&l.attn.q) + lin(&l.attn.k) + lin(&l.attn.v) + lin(&l.attn.o);
            n += lin(&l.mlp.gate) + lin(&l.mlp.up) + lin(&l.mlp.down);
        }
        n * 4
    }

    /// Weight bytes one decode step reads: every layer's matrices and the LM head (the
    /// embedding lookup reads one row, so an untied input embedding does not count).
    pub fn decode_weight_bytes(&self) -> usize {
        let untied_embed = self
            .lm_head
            .as_ref()
            .map_or(0, |_| self.embed.dims()[0] * self.embed.dims()[1] * 4);
        self.weight_bytes() - untied_embed
    }

    /// Bytes the LM head reads per decoded token (the dominant decode cost of small models).
    pub fn lm_head_bytes(&self) -> usize {
        self.spec.vocab_size * self.spec.hidden_size * 4
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
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, s]),
            dev,
        );
        let mut x = embedding(self.embed.clone(), ids);
        if let Some(sc) = self.spec.embed_scale {
            x = x.mul_scalar(sc);
        }
        let tables: Vec<RopeTables> = self
            .ropes
            .iter()
            .map(|r| RopeTables::new(r, self.spec.head_dim, &positions, dev))
            .collect();
        if let Some(c) = ctx.capture.as_deref_mut() {
            c.push_positions(&positions);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let a = &layer.attn;
            let (q, k, v) = a.qkv(
                layer.attn_norm.forward(x.clone()),
                &tables[self.rope_of_layer[i]],
            );
            let lc = &mut ctx.cache.layers[i];
            if let AttentionKind::Sliding(w) = a.kind {
                // Entries no query of this chunk can see are gone for good.
                lc.drop_before(start as i64 - w as i64 + 1);
            }
            lc.append(k, v, &positions);
            let o = a.attend(&q, &positions, lc);
            if let AttentionKind::Sliding(w) = a.kind {
                // Keep only what the next query (at `start + s`) can see: at most the window.
                lc.drop_before((start + s) as i64 - w as i64 + 1);
            }
            if let Some(obs) = ctx.observer.as_deref_mut()
                && obs.wants(i)
            {
                obs.observe(AttentionEvent {
                    layer: i,
                    queries: &q,
                    query_positions: &positions,
                    cache: lc,
                    attention: a,
                    output: &o,
                });
            }
            if let Some(c) = ctx.capture.as_deref_mut() {
                c.push(i, q);
            }
            let mut h = a.project_out(o);
            if let Some(n) = &layer.post_attn_norm {
                h = n.forward(h);
            }
            x = x + h;
            let mut m = layer.mlp.forward(layer.ffn_norm.forward(x.clone()));
            if let Some(n) = &layer.post_ffn_norm {
                m = n.forward(m);
            }
            x = x + m;
        }
        let from = logits_from?;
        let x = x.narrow(1, from, s - from);
        Some(self.logits(x))
    }

    /// `[1, n, hidden]` → `[n, vocab]`.
    fn logits(&self, x: Tensor<3>) -> Tensor<2> {
        let [_, n, h] = x.dims();
        let x = self.final_norm.forward(x).reshape([n, h]);
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        let mut logits = x.matmul(w.clone().transpose());
        if let Some(c) = self.spec.final_logit_softcap {
            logits = logits.div_scalar(c).tanh().mul_scalar(c);
        }
        logits
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
}

/// Loads tensors by slot, checks shapes, applies the family's transforms and remembers what
/// was used so that unexpected extra tensors are reported.
struct Weights<'a> {
    source: &'a dyn WeightSource,
    family: &'a dyn Family,
    spec: &'a ModelSpec,
    device: &'a RuntimeDevice,
    consumed: RefCell<HashSet<String>>,
}

impl Weights<'_> {
    fn name(&self, slot: Slot, layer: Option<usize>) -> String {
        match self.source.kind() {
            SourceKind::Safetensors => self.family.hf_name(slot, layer),
            SourceKind::Gguf => gguf_name(slot, layer),
        }
    }

    fn has(&self, slot: Slot, layer: Option<usize>) -> bool {
        self.source.contains(&self.name(slot, layer))
    }

    fn take<const D: usize>(
        &self,
        slot: Slot,
        layer: Option<usize>,
        expected: [usize; D],
    ) -> Result<Tensor<D>, LoadError> {
        let name = self.name(slot, layer);
        if !self.source.contains(&name) {
            return Err(LoadError::MissingTensor {
                name,
                expected: format!("{expected:?}"),
            });
        }
        let (data, shape) = self.source.load(&name)?;
        if shape != expected {
            return Err(LoadError::Shape {
                name,
                expected: expected.to_vec(),
                found: shape,
            });
        }
        let data = self
            .family
            .transform(self.spec, self.source.kind(), slot, data, &shape);
        self.consumed.borrow_mut().insert(name);
        Ok(Tensor::from_data(
            TensorData::new(data, expected),
            &self.device.device,
        ))
    }

    fn check_all_consumed(&self) -> Result<(), LoadError> {
        let used = self.consumed.borrow();
        let extra: Vec<String> = self
            .source
            .names()
            .into_iter()
            .filter(|n| !used.contains(n) && !self.source.ignorable(n))
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(LoadError::ExtraTensors(extra))
        }
    }
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
