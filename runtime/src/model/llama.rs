//! Llama 2/3.x and Mistral: pre-norm, SwiGLU, no bias, RoPE (Llama 3 frequency scaling from the
//! config). Mistral v0.1 adds a sliding window on every layer, which the spec carries.

use super::{Family, Slot};
use crate::spec::ModelSpec;
use crate::weights::SourceKind;

pub struct LlamaFamily;

impl Family for LlamaFamily {
    /// llama.cpp's converter permutes q/k rows of Llama-family weights for its interleaved RoPE
    /// (`permute` in convert_hf_to_gguf.py); undo it so our rotate-half RoPE applies.
    fn row_order(
        &self,
        spec: &ModelSpec,
        source: SourceKind,
        slot: Slot,
        rows: usize,
    ) -> Option<Vec<usize>> {
        let heads = match slot {
            Slot::Q => spec.n_heads,
            Slot::K => spec.n_kv_heads,
            _ => return None,
        };
        (source == SourceKind::Gguf).then(|| unpermute_order(rows, heads))
    }

    fn transform(
        &self,
        spec: &ModelSpec,
        source: SourceKind,
        slot: Slot,
        data: Vec<f32>,
        shape: &[usize],
    ) -> Vec<f32> {
        match self.row_order(spec, source, slot, shape[0]) {
            Some(order) => {
                let cols = shape[1];
                let mut out = Vec::with_capacity(data.len());
                for r in order {
                    out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
                }
                out
            }
            None => data,
        }
    }
}

/// Inverse of llama.cpp's q/k permutation as a row order: within each head, GGUF row `2i` is HF
/// row `i` and GGUF row `2i + 1` is HF row `d/2 + i`.
pub fn unpermute_order(rows: usize, heads: usize) -> Vec<usize> {
    let d = rows / heads;
    let half = d / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            order[h * d + i] = h * d + 2 * i;
            order[h * d + half + i] = h * d + 2 * i + 1;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // HF rows 0..8 of one column, 2 heads of d = 4; llama.cpp's permute gives, per head,
        // [r0, r2, r1, r3].
        let gguf = [0, 2, 1, 3, 4, 6, 5, 7];
        let order = unpermute_order(8, 2);
        let hf: Vec<usize> = order.iter().map(|&r| gguf[r]).collect();
        assert_eq!(hf, vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
