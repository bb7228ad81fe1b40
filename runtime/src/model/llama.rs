//! Llama 2/3.x and Mistral: pre-norm, SwiGLU, no bias, RoPE (Llama 3 frequency scaling from the
//! config). Mistral v0.1 adds a sliding window on every layer, which the spec carries.

use super::{Family, Slot};
use crate::loader::SourceKind;
use crate::spec::ModelSpec;

pub struct LlamaFamily;

impl Family for LlamaFamily {
    /// llama.cpp's converter permutes q/k rows of Llama-family weights for its interleaved RoPE
    /// (`permute` in convert_hf_to_gguf.py); undo it so our rotate-half RoPE applies.
    fn transform(
        &self,
        spec: &ModelSpec,
        source: SourceKind,
        slot: Slot,
        data: Vec<f32>,
        shape: &[usize],
    ) -> Vec<f32> {
        let heads = match slot {
            Slot::Q => spec.n_heads,
            Slot::K => spec.n_kv_heads,
            _ => return data,
        };
        if source != SourceKind::Gguf {
            return data;
        }
        unpermute_rows(&data, shape[0], shape[1], heads)
    }
}

/// Inverse of llama.cpp's q/k permutation: within each head, GGUF row `2i` is HF row `i` and
/// GGUF row `2i + 1` is HF row `d/2 + i`.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for (dst, src) in [(i, 2 * i), (half + i, 2 * i + 1)] {
                let (dr, sr) = (h * d + dst, h * d + src);
                out[dr * cols..(dr + 1) * cols].copy_from_slice(&data[sr * cols..(sr + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // HF rows 0..8 of one column, 2 heads of d = 4; llama.cpp's permute gives, per head,
        // [r0, r2, r1, r3].
        let gguf = vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(
            unpermute_rows(&gguf, 8, 1, 2),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
    }
}
