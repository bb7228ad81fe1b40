//! Building blocks shared by every architecture: linear, RMSNorm, RoPE, gated MLP.

use std::sync::Arc;

use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::act::{Act, Heads, from_host, to_host};
use crate::kernels::ops;
use crate::kernels::qmatrix::{QMatrix, matvec_many};

use crate::spec::{Activation, RopeSpec};

/// A weight matrix `[out, in]`: a Burn tensor in f32 (exact path, GPU backends), or a
/// [`QMatrix`] in its stored block format that the CPU kernels compute on (fast path).
// One per weight matrix: the size of the tensor variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum LinearWeight {
    Dense(Tensor<2>),
    Kernel(Arc<QMatrix>),
}

impl LinearWeight {
    pub fn dims(&self) -> [usize; 2] {
        match self {
            LinearWeight::Dense(w) => w.dims(),
            LinearWeight::Kernel(q) => [q.rows(), q.cols()],
        }
    }

    /// Bytes the matrix occupies in memory (f32 for dense, the block format for kernels).
    pub fn byte_len(&self) -> usize {
        match self {
            LinearWeight::Dense(w) => w.dims()[0] * w.dims()[1] * 4,
            LinearWeight::Kernel(q) => q.byte_len(),
        }
    }

    /// Rows `ids` as `[1, n, in]` (the embedding lookup): host rows for a kernel matrix.
    pub fn rows(&self, ids: &[u32], device: &Device) -> Act {
        let [_, h] = self.dims();
        match self {
            LinearWeight::Dense(w) => {
                let ids = Tensor::<2, Int>::from_data(
                    TensorData::new(
                        ids.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                        [1, ids.len()],
                    ),
                    device,
                );
                Act::Tensor(embedding(w.clone(), ids))
            }
            LinearWeight::Kernel(q) => {
                let mut out = vec![0.0f32; ids.len() * h];
                for (row, &id) in out.chunks_exact_mut(h).zip(ids) {
                    let id = id as usize;
                    q.dequantize_rows(id..id + 1, row);
                }
                Act::Host {
                    data: out,
                    s: ids.len(),
                    c: h,
                }
            }
        }
    }
}

/// `y = x Wᵀ + b` with `W` kept in the HF/GGUF `[out, in]` layout (a transposed view is free on
/// burn-flex, so no copy at load).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor<1>>,
    /// The bias on the host, for the kernel path.
    bias_host: Option<Arc<Vec<f32>>>,
}

impl Linear {
    pub fn new(weight: LinearWeight) -> Self {
        Linear {
            weight,
            bias: None,
            bias_host: None,
        }
    }

    pub fn with_bias(mut self, bias: Tensor<1>) -> Self {
        if matches!(self.weight, LinearWeight::Kernel(_)) {
            self.bias_host = Some(Arc::new(to_host(bias.clone())));
        }
        self.bias = Some(bias);
        self
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The kernel matrix when this layer runs on the CPU kernels.
    pub fn kernel(&self) -> Option<&QMatrix> {
        match &self.weight {
            LinearWeight::Kernel(q) => Some(q),
            LinearWeight::Dense(_) => None,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, i] = x.dims();
        match &self.weight {
            LinearWeight::Dense(w) => {
                let y = x.reshape([b * s, i]).matmul(w.clone().transpose());
                let y = match &self.bias {
                    Some(bias) => y + bias.clone().unsqueeze_dim(0),
                    None => y,
                };
                y.reshape([b, s, self.out_features()])
            }
            LinearWeight::Kernel(_) => {
                let device = x.device();
                let y = self.forward_host(&to_host(x), b * s);
                from_host(y, [b, s, self.out_features()], &device)
            }
        }
    }

    /// The op-layer form: host activations stay on the host (kernels), tensors on Burn.
    pub fn apply(&self, x: Act) -> Act {
        match (x, &self.weight) {
            (Act::Host { data, s, .. }, LinearWeight::Kernel(_)) => Act::Host {
                data: self.forward_host(&data, s),
                s,
                c: self.out_features(),
            },
            (Act::Tensor(t), _) => Act::Tensor(self.forward(t)),
            (host, LinearWeight::Dense(w)) => {
                let device = w.device();
                Act::Tensor(self.forward(host.into_tensor(&device)))
            }
        }
    }

    /// `x` `[n, in]` → `[n, out]` on the CPU kernels. Panics on a dense weight (callers check
    /// [`Linear::kernel`]).
    pub fn forward_host(&self, x: &[f32], n: usize) -> Vec<f32> {
        let q = self.kernel().expect("forward_host needs a kernel weight");
        let out = q.rows();
        let mut y = vec![0.0f32; n * out];
        if n == 1 {
            q.matvec(x, &mut y);
        } else {
            q.matmul(x, n, &mut y);
        }
        self.add_bias_host(&mut y);
        y
    }

    fn add_bias_host(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias_host {
            for row in y.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b);
            }
        }
    }
}

/// Several kernel layers of the same input `x` `[n, in]` (q/k/v, gate/up). For one token
/// (decode) they share one activation quantization and one parallel region.
pub fn forward_many_host(lins: &[&Linear], x: &[f32], n: usize) -> Vec<Vec<f32>> {
    if n != 1 {
        return lins.iter().map(|l| l.forward_host(x, n)).collect();
    }
    let mats: Vec<&QMatrix> = lins
        .iter()
        .map(|l| l.kernel().expect("forward_many_host needs kernel weights"))
        .collect();
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0f32; m.rows()]).collect();
    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    matvec_many(&mats, x, &mut ys);
    for (l, y) in lins.iter().zip(outs.iter_mut()) {
        l.add_bias_host(y);
    }
    outs
}

/// RMSNorm `x / sqrt(mean(x²) + eps) * gamma`. For Gemma, the loader folds the `1 + w` into
/// gamma for HF weights (GGUF already stores it folded).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub gamma: Tensor<1>,
    /// Gamma on the host, for the kernel path.
    gamma_host: Arc<Vec<f32>>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(gamma: Tensor<1>, eps: f64) -> Self {
        RmsNorm {
            gamma_host: Arc::new(to_host(gamma.clone())),
            gamma,
            eps,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = (x.clone() * x.clone())
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let mut shape = [1usize; D];
        shape[D - 1] = self.gamma.dims()[0];
        (x / rms) * self.gamma.clone().reshape(shape)
    }

    fn host(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; data.len()];
        ops::rms_norm(data, &self.gamma_host, self.eps as f32, &mut out);
        out
    }

    pub fn apply(&self, x: Act) -> Act {
        match x {
            Act::Tensor(t) => Act::Tensor(self.forward(t)),
            Act::Host { data, s, c } => Act::Host {
                data: self.host(&data),
                s,
                c,
            },
        }
    }

    /// Per-head norm (Qwen 3 / Gemma 3 q/k norms) over the last dimension.
    pub fn apply_heads(&self, x: Heads) -> Heads {
        match x {
            Heads::Tensor(t) => Heads::Tensor(self.forward(t)),
            Heads::Host { data, h, s, d } => Heads::Host {
                data: self.host(&data),
                h,
                s,
                d,
            },
        }
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
        if self.gate.kernel().is_some()
            && self.up.kernel().is_some()
            && self.down.kernel().is_some()
        {
            return self.forward_kernels(x);
        }
        let g = self.gate.forward(x.clone());
        let g = match self.activation {
            Activation::Silu => silu(g),
            Activation::GeluTanh => gelu_approximate(g),
        };
        self.down.forward(g * self.up.forward(x))
    }

    fn forward_kernels(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, h] = x.dims();
        let device = x.device();
        let y = self.host(&to_host(x), b * s);
        from_host(y, [b, s, h], &device)
    }

    /// The whole MLP on the host: two matmuls, the activation fused with the product
    /// (vectorised, no libm calls), the down projection.
    fn host(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut gu = forward_many_host(&[&self.gate, &self.up], x, n).into_iter();
        let (mut g, u) = (gu.next().unwrap(), gu.next().unwrap());
        match self.activation {
            Activation::Silu => ops::silu_mul(&mut g, &u),
            Activation::GeluTanh => ops::gelu_tanh_mul(&mut g, &u),
        }
        self.down.forward_host(&g, n)
    }

    pub fn apply(&self, x: Act) -> Act {
        match x {
            Act::Host { data, s, c } if self.gate.kernel().is_some() => Act::Host {
                data: self.host(&data, s),
                s,
                c,
            },
            other => {
                let device = match &self.gate.weight {
                    LinearWeight::Dense(w) => w.device(),
                    LinearWeight::Kernel(_) => match &other {
                        Act::Tensor(t) => t.device(),
                        Act::Host { .. } => unreachable!("host input takes the kernel arm"),
                    },
                };
                Act::Tensor(self.forward(other.into_tensor(&device)))
            }
        }
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
    /// The same two tables `[S, D]` on the host, for the kernel path.
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
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
            cos: Tensor::from_data(TensorData::new(cos.clone(), [1, 1, s, head_dim]), device),
            sin_signed: Tensor::from_data(
                TensorData::new(sin.clone(), [1, 1, s, head_dim]),
                device,
            ),
            cos_host: cos,
            sin_host: sin,
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

    pub fn apply_heads(&self, x: Heads) -> Heads {
        match x {
            Heads::Tensor(t) => Heads::Tensor(self.apply(t)),
            Heads::Host { mut data, h, s, d } => {
                let half = d / 2;
                for row in data
                    .chunks_exact_mut(d)
                    .enumerate()
                    .map(|(i, r)| (i % s, r))
                {
                    let (t, x) = row;
                    let (c, sn) = (
                        &self.cos_host[t * d..(t + 1) * d],
                        &self.sin_host[t * d..(t + 1) * d],
                    );
                    for i in 0..half {
                        let (a, b) = (x[i], x[i + half]);
                        x[i] = a * c[i] + b * sn[i];
                        x[i + half] = b * c[i + half] + a * sn[i + half];
                    }
                }
                Heads::Host { data, h, s, d }
            }
        }
    }
}
