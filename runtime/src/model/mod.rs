//! Decoder models. One file per architecture family (`llama.rs`, `qwen.rs`, `gemma3.rs`) says
//! how its weights are named and transformed; `transformer.rs` is the shared decoder they all
//! build, driven by [`ModelSpec`].

pub mod act;
pub mod gemma3;
pub mod layers;
pub mod llama;
mod load;
pub mod qwen;
pub mod transformer;

use burn::tensor::Tensor;

use crate::cache::{KvCache, LayerCache};
use crate::device::RuntimeDevice;
use crate::spec::{Architecture, ModelSpec};
use crate::weights::{LoadError, SourceKind, WeightSource};
pub use transformer::{Attention, Transformer};

/// A causal LM the runtime can drive. Batch size 1: long-context inference is latency-bound.
pub trait CausalLM: Send + Sync {
    fn spec(&self) -> &ModelSpec;
    fn device(&self) -> &RuntimeDevice;
    /// Runs `tokens` at positions `ctx.start_pos..`, appending their K/V to `ctx.cache`, and
    /// returns the logits `[n, vocab]` of the last `n = ctx.logits_last` positions (clamped to
    /// the number of tokens).
    fn forward(&self, tokens: &[u32], ctx: &mut ForwardCtx<'_>) -> Tensor<2>;
    /// A layer's attention block, for observers that recompute attention (the profiler).
    fn attention(&self, layer: usize) -> &Attention;
    /// Tokens one internal prefill chunk runs ([`Self::forward`] splits longer inputs into
    /// chunks of this size); a prefill run in pieces of whole chunks computes exactly what one
    /// call does. The default: no chunking.
    fn prefill_chunk(&self) -> usize {
        usize::MAX
    }
    /// One decode step of several sequences: `tokens[b]` at the next position of `caches[b]`
    /// (appended there); returns each sequence's next-token logits. Where the backend allows
    /// (the CPU kernels) the weight matmuls run once for all rows and attention runs per
    /// sequence over its own cache; this default steps each sequence alone.
    fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Vec<Vec<f32>> {
        assert_eq!(tokens.len(), caches.len(), "one token per cache");
        forward_each(self, tokens, caches)
    }
    /// The most sequences one [`Self::forward_batch`] may take while each still gets exactly
    /// the logits it would get alone (the default steps them one by one: any number).
    fn exact_batch(&self) -> usize {
        usize::MAX
    }
}

/// [`CausalLM::forward_batch`] one sequence at a time.
pub(crate) fn forward_each<M: CausalLM + ?Sized>(
    model: &M,
    tokens: &[u32],
    caches: &mut [&mut KvCache],
) -> Vec<Vec<f32>> {
    tokens
        .iter()
        .zip(caches.iter_mut())
        .map(|(&t, c)| {
            let l = model.forward(&[t], &mut ForwardCtx::new(c));
            act::to_host(l)
        })
        .collect()
}

/// Everything a forward pass reads or writes besides the token ids.
pub struct ForwardCtx<'a> {
    pub cache: &'a mut KvCache,
    /// Logical position of the first token (the cache's logical length for a continuation).
    pub start_pos: usize,
    /// Logits are computed for this many final positions only (1 during generation).
    pub logits_last: usize,
    /// Keeps the last `window` post-RoPE queries of every layer (presses score with them).
    pub capture: Option<&'a mut WindowCapture>,
    /// Sees every layer's attention (the profiler's SRH scoring and eviction-error probes).
    pub observer: Option<&'a mut dyn AttentionObserver>,
}

impl<'a> ForwardCtx<'a> {
    /// Continues from the cache's logical length.
    pub fn new(cache: &'a mut KvCache) -> Self {
        let start_pos = cache.next_pos;
        ForwardCtx {
            cache,
            start_pos,
            logits_last: 1,
            capture: None,
            observer: None,
        }
    }

    pub fn logits_last(mut self, n: usize) -> Self {
        self.logits_last = n;
        self
    }

    pub fn capture(mut self, c: &'a mut WindowCapture) -> Self {
        self.capture = Some(c);
        self
    }

    pub fn observer(mut self, o: &'a mut dyn AttentionObserver) -> Self {
        self.observer = Some(o);
        self
    }
}

/// The last `window` queries (after RoPE) of each layer: `[1, H_q, ≤window, D]`, and their
/// positions.
#[derive(Debug)]
pub struct WindowCapture {
    pub window: usize,
    pub queries: Vec<Option<Tensor<4>>>,
    pub positions: Vec<i64>,
}

impl WindowCapture {
    pub fn new(window: usize, n_layers: usize) -> Self {
        WindowCapture {
            window,
            queries: vec![None; n_layers],
            positions: Vec::new(),
        }
    }

    /// The last `window` captured queries of `layer` (fewer if fewer were captured) and their
    /// positions: one prefill can serve methods with different observation windows.
    pub fn tail(&self, layer: usize, window: usize) -> Option<(Tensor<4>, &[i64])> {
        let q = self.queries[layer].as_ref()?;
        let t = q.dims()[2];
        let w = window.clamp(1, t);
        let pos = &self.positions[self.positions.len().saturating_sub(w)..];
        Some((q.clone().narrow(2, t - w, w), pos))
    }

    pub(crate) fn push(&mut self, layer: usize, q: Tensor<4>) {
        let q = match self.queries[layer].take() {
            Some(prev) => Tensor::cat(vec![prev, q], 2),
            None => q,
        };
        let t = q.dims()[2];
        self.queries[layer] = Some(if t > self.window {
            q.narrow(2, t - self.window, self.window)
        } else {
            q
        });
    }

    pub(crate) fn push_positions(&mut self, pos: &[i64]) {
        self.positions.extend_from_slice(pos);
        let n = self.positions.len();
        if n > self.window {
            self.positions.drain(..n - self.window);
        }
    }
}

/// What an observer sees of one layer's attention in one forward pass.
pub struct AttentionEvent<'a> {
    pub layer: usize,
    /// `[1, H_q, S, D]` after q-norm and RoPE.
    pub queries: &'a Tensor<4>,
    pub query_positions: &'a [i64],
    /// The layer's cache, already holding this pass's keys.
    pub cache: &'a LayerCache,
    /// The block, to recompute attention on other K/V (e.g. a compressed selection).
    pub attention: &'a Attention,
    /// This pass's attention output before the output projection, `[1, H_q, S, D]`.
    pub output: &'a Tensor<4>,
}

pub trait AttentionObserver {
    fn wants(&self, layer: usize) -> bool;
    fn observe(&mut self, event: AttentionEvent<'_>);
}

/// Weight slots, named once per source: HF names per family, GGUF names uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    /// Gemma's norm after attention (before the residual add).
    PostAttnNorm,
    /// The norm before the MLP (Llama's `post_attention_layernorm`).
    FfnNorm,
    PostFfnNorm,
    Gate,
    Up,
    Down,
}

/// How a family names and transforms its weights.
pub trait Family {
    /// Hugging Face tensor name of a slot (`layer` is `None` for model-level slots).
    fn hf_name(&self, slot: Slot, layer: Option<usize>) -> String {
        standard_hf_name(slot, layer)
    }
    /// The order of a weight matrix's stored rows, where the family reorders them (Llama's GGUF
    /// q/k permutation): output row `i` is stored row `order[i]`. Row reordering is the only
    /// transform a matrix may need, so the CPU kernels can apply it to quantized rows.
    fn row_order(
        &self,
        _spec: &ModelSpec,
        _source: SourceKind,
        _slot: Slot,
        _rows: usize,
    ) -> Option<Vec<usize>> {
        None
    }
    /// Adjusts a loaded tensor (e.g. Gemma's `1 + w` norms, Llama's GGUF q/k permutation).
    fn transform(
        &self,
        _spec: &ModelSpec,
        _source: SourceKind,
        _slot: Slot,
        data: Vec<f32>,
        _shape: &[usize],
    ) -> Vec<f32> {
        data
    }
}

pub fn standard_hf_name(slot: Slot, layer: Option<usize>) -> String {
    let l = |s: &str| format!("model.layers.{}.{s}", layer.unwrap_or(0));
    match slot {
        Slot::Embed => "model.embed_tokens.weight".into(),
        Slot::FinalNorm => "model.norm.weight".into(),
        Slot::LmHead => "lm_head.weight".into(),
        Slot::AttnNorm => l("input_layernorm.weight"),
        Slot::Q => l("self_attn.q_proj.weight"),
        Slot::K => l("self_attn.k_proj.weight"),
        Slot::V => l("self_attn.v_proj.weight"),
        Slot::O => l("self_attn.o_proj.weight"),
        Slot::QBias => l("self_attn.q_proj.bias"),
        Slot::KBias => l("self_attn.k_proj.bias"),
        Slot::VBias => l("self_attn.v_proj.bias"),
        Slot::QNorm => l("self_attn.q_norm.weight"),
        Slot::KNorm => l("self_attn.k_norm.weight"),
        Slot::PostAttnNorm => l("post_attention_layernorm.weight"),
        Slot::FfnNorm => l("post_attention_layernorm.weight"),
        Slot::PostFfnNorm => l("post_feedforward_layernorm.weight"),
        Slot::Gate => l("mlp.gate_proj.weight"),
        Slot::Up => l("mlp.up_proj.weight"),
        Slot::Down => l("mlp.down_proj.weight"),
    }
}

/// llama.cpp's names, the same for every architecture.
pub fn gguf_name(slot: Slot, layer: Option<usize>) -> String {
    let l = |s: &str| format!("blk.{}.{s}", layer.unwrap_or(0));
    match slot {
        Slot::Embed => "token_embd.weight".into(),
        Slot::FinalNorm => "output_norm.weight".into(),
        Slot::LmHead => "output.weight".into(),
        Slot::AttnNorm => l("attn_norm.weight"),
        Slot::Q => l("attn_q.weight"),
        Slot::K => l("attn_k.weight"),
        Slot::V => l("attn_v.weight"),
        Slot::O => l("attn_output.weight"),
        Slot::QBias => l("attn_q.bias"),
        Slot::KBias => l("attn_k.bias"),
        Slot::VBias => l("attn_v.bias"),
        Slot::QNorm => l("attn_q_norm.weight"),
        Slot::KNorm => l("attn_k_norm.weight"),
        Slot::PostAttnNorm => l("post_attention_norm.weight"),
        Slot::FfnNorm => l("ffn_norm.weight"),
        Slot::PostFfnNorm => l("post_ffw_norm.weight"),
        Slot::Gate => l("ffn_gate.weight"),
        Slot::Up => l("ffn_up.weight"),
        Slot::Down => l("ffn_down.weight"),
    }
}

pub fn family(arch: Architecture) -> &'static dyn Family {
    match arch {
        Architecture::Llama | Architecture::Mistral => &llama::LlamaFamily,
        Architecture::Qwen2 | Architecture::Qwen3 => &qwen::QwenFamily,
        Architecture::Gemma3 => &gemma3::Gemma3Family,
    }
}

/// Builds the model for `spec` from a weight source.
pub fn build(
    spec: ModelSpec,
    source: &dyn WeightSource,
    device: &RuntimeDevice,
) -> Result<Transformer, LoadError> {
    Transformer::load(spec, source, device)
}
