//! Building blocks shared by every architecture: linear, RMSNorm, RoPE, gated MLP.

use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::{Tensor, TensorData};

use crate::spec::{Activation, RopeSpec};

/// `y = x Wᵀ + b` with `W` kept in the HF/GGUF `[out, in]` layout (a transposed view is free on
/// burn-flex, so no copy at load).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, i] = x.dims();
        let y = x
            .reshape([b * s, i])
            .matmul(self.weight.clone().transpose());
        let y = match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze_dim(0),
            None => y,
        };
        y.reshape([b, s, self.out_features()])
    }
}

/// RMSNorm `x / sqrt(mean(x²) + eps) * gamma`. For Gemma, the loader folds the `1 + w` into
/// gamma for HF weights (GGUF already stores it folded).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub gamma: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = (x.clone() * x.clone())
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let mut shape = [1usize; D];
        shape[D - 1] = self.gamma.dims()[0];
        (x / rms) * self.gamma.clone().reshape(shape)
    }
}

/// Gated MLP: `down(act(gate(x)) * up(x))` — SwiGLU or GeGLU.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let g = self.gate.forward(x.clone());
        let g = match self.activation {
            Activation::Silu => silu(g),
            Activation::GeluTanh => gelu_approximate(g),
        };
        self.down.forward(g * self.up.forward(x))
    }
}

/// Rotary embedding tables for one set of positions (NeoX / rotate-half pairing: dimension `i`
/// pairs with `i + d/2`). GGUF Llama weights, stored for the interleaved pairing, are permuted
/// back at load so one pairing serves every model.
#[derive(Clone, Debug)]
pub struct RopeTables {
    /// `[1, 1, S, D]`.
    pub cos: Tensor<4>,
    /// `[1, 1, S, D]`, with the sign of the first half folded in (`-sin` for i < d/2).
    pub sin_signed: Tensor<4>,
}

impl RopeTables {
    pub fn new(
        rope: &RopeSpec,
        head_dim: usize,
        positions: &[i64],
        device: &burn::tensor::Device,
    ) -> Self {
        let inv = rope.inv_freq(head_dim);
        let half = head_dim / 2;
        let s = positions.len();
        let mut cos = Vec::with_capacity(s * head_dim);
        let mut sin = Vec::with_capacity(s * head_dim);
        for &p in positions {
            // Angles in f64, then rounded: matches the f32 reference within 1 ulp at 32K.
            let row: Vec<(f32, f32)> = inv
                .iter()
                .map(|&f| {
                    let a = p as f64 * f;
                    (a.cos() as f32, a.sin() as f32)
                })
                .collect();
            for half_i in 0..2 {
                for &(c, sn) in &row {
                    cos.push(c);
                    sin.push(if half_i == 0 { -sn } else { sn });
                }
            }
        }
        debug_assert_eq!(cos.len(), s * 2 * half);
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, [1, 1, s, head_dim]), device),
            sin_signed: Tensor::from_data(TensorData::new(sin, [1, 1, s, head_dim]), device),
        }
    }

    /// `x * cos + swap_halves(x) * sin_signed` on `[B, H, S, D]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, _, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        x * self.cos.clone() + swapped * self.sin_signed.clone()
    }
}
