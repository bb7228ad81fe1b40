//! Building blocks shared by every architecture: linear, RMSNorm, RoPE, gated MLP.

use std::sync::Arc;

use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::act::{Act, Heads, from_host, to_host};
use crate::kernels::ops;
use crate::kernels::qmatrix::{QMatrix, matmul_many};

use crate::spec::{Activation, RopeSpec};

/// A weight matrix `[out, in]`: Burn tensors in f32 (exact path, GPU backends), or a
/// [`QMatrix`] in its stored block format that the CPU kernels compute on (fast path).
// One per weight matrix: the size of the tensor variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum LinearWeight {
    Dense(DenseMatrix),
    Kernel(Arc<QMatrix>),
}

/// The largest piece of a dense matrix on a GPU backend: WebGPU guarantees storage-buffer
/// bindings of 128 MiB and no more (Gemma 3's tied 262144 × 640 f32 embedding is 640 MiB, a
/// 7B model's MLP matrices 224 MiB), so larger matrices are held as several row blocks.
pub const GPU_PART_BYTES: usize = 128 << 20;

/// A dense `[out, in]` matrix as one tensor, or as row blocks of at most
/// [`GPU_PART_BYTES`] each on a GPU backend (the rows of part `i` follow those of part `i - 1`).
#[derive(Clone, Debug)]
pub struct DenseMatrix {
    parts: Vec<Tensor<2>>,
    dims: [usize; 2],
}

impl DenseMatrix {
    pub fn new(w: Tensor<2>) -> Self {
        DenseMatrix {
            dims: w.dims(),
            parts: vec![w],
        }
    }

    /// Row-major f32 `data` `[rows, cols]` on `device`, in row blocks of at most `part_bytes`.
    pub fn from_rows(data: Vec<f32>, dims: [usize; 2], part_bytes: usize, device: &Device) -> Self {
        let [rows, cols] = dims;
        let per_part = (part_bytes / (cols.max(1) * 4)).max(1);
        if rows <= per_part {
            return DenseMatrix::new(Tensor::from_data(TensorData::new(data, dims), device));
        }
        let parts = data
            .chunks(per_part * cols)
            .map(|c| Tensor::from_data(TensorData::new(c.to_vec(), [c.len() / cols, cols]), device))
            .collect();
        DenseMatrix { parts, dims }
    }

    pub fn dims(&self) -> [usize; 2] {
        self.dims
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    pub fn device(&self) -> Device {
        self.parts[0].device()
    }

    /// `x` `[n, in]` → `x Wᵀ` `[n, out]` (one matmul per part, joined along `out`).
    fn matmul_t(&self, x: Tensor<2>) -> Tensor<2> {
        if let [w] = self.parts.as_slice() {
            return x.matmul(w.clone().transpose());
        }
        let ys = self
            .parts
            .iter()
            .map(|w| x.clone().matmul(w.clone().transpose()))
            .collect();
        Tensor::cat(ys, 1)
    }

    /// Rows `ids` as `[1, n, in]`: each part looks up the ids it holds, then the rows are put
    /// back in the order asked.
    fn rows(&self, ids: &[u32], device: &Device) -> Tensor<3> {
        let int = |v: Vec<i64>, shape: [usize; 2]| {
            Tensor::<2, Int>::from_data(TensorData::new(v, shape), device)
        };
        if let [w] = self.parts.as_slice() {
            let ids = int(ids.iter().map(|&t| t as i64).collect(), [1, ids.len()]);
            return embedding(w.clone(), ids);
        }
        let mut pieces = Vec::new();
        let mut order = vec![0i64; ids.len()];
        let (mut start, mut taken) = (0usize, 0i64);
        for w in &self.parts {
            let end = start + w.dims()[0];
            let local: Vec<(usize, i64)> = ids
                .iter()
                .enumerate()
                .filter(|&(_, &t)| (start..end).contains(&(t as usize)))
                .map(|(i, &t)| (i, (t as usize - start) as i64))
                .collect();
            if !local.is_empty() {
                for (k, &(i, _)) in local.iter().enumerate() {
                    order[i] = taken + k as i64;
                }
                taken += local.len() as i64;
                let idx = local.iter().map(|&(_, r)| r).collect::<Vec<_>>();
                let n = idx.len();
                pieces.push(w.clone().select(0, int(idx, [1, n]).reshape([n])));
            }
            start = end;
        }
        let n = ids.len();
        let joined = Tensor::cat(pieces, 0);
        joined
            .select(0, int(order, [1, n]).reshape([n]))
            .unsqueeze_dim(0)
    }
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
            LinearWeight::Dense(w) => Act::Tensor(w.rows(ids, device)),
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
                let y = w.matmul_t(x.reshape([b * s, i]));
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

/// Several kernel layers of the same input `x` `[n, in]` (q/k/v, gate/up). For a decode step
/// (one token, or up to 8 sessions' tokens on packed weights) they share one activation
/// quantization and one parallel region.
pub fn forward_many_host(lins: &[&Linear], x: &[f32], n: usize) -> Vec<Vec<f32>> {
    if n > 8 {
        return lins.iter().map(|l| l.forward_host(x, n)).collect();
    }
    let mats: Vec<&QMatrix> = lins
        .iter()
        .map(|l| l.kernel().expect("forward_many_host needs kernel weights"))
        .collect();
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0f32; n * m.rows()]).collect();
    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    matmul_many(&mats, x, n, &mut ys);
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

    /// In f32 whatever the device computes in (as HF does): squares of Gemma's activations
    /// exceed f16's range, and bf16's 8-bit mantissa would round the mean.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let f32 = burn::tensor::FloatDType::F32;
        let dtype = x.dtype();
        let x = x.cast(f32);
        let rms = (x.clone() * x.clone())
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let mut shape = [1usize; D];
        shape[D - 1] = self.gamma.dims()[0];
        let y = (x / rms) * self.gamma.clone().cast(f32).reshape(shape);
        y.cast(dtype)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeDevice;

    /// A matrix held in row blocks computes what one tensor does: the matmul joined along `out`,
    /// and embedding rows looked up across blocks in any order (repeats included).
    #[test]
    fn split_dense_matrix_equals_one_tensor() {
        let dev = RuntimeDevice::cpu().device;
        let (rows, cols) = (23, 5);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32) * 0.01 - 0.5)
            .collect();
        let whole = DenseMatrix::from_rows(data.clone(), [rows, cols], usize::MAX, &dev);
        // 4 rows per block: 6 blocks, the last one short.
        let split = DenseMatrix::from_rows(data, [rows, cols], 4 * cols * 4, &dev);
        assert_eq!((whole.parts(), split.parts()), (1, 6));
        assert_eq!(split.dims(), [rows, cols]);

        let x: Vec<f32> = (0..3 * cols).map(|i| (i as f32).sin()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [3, cols]), &dev);
        let a = whole.matmul_t(x.clone()).into_data();
        let b = split.matmul_t(x).into_data();
        assert_eq!(a.shape(), b.shape());
        a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));

        let ids = [22, 0, 5, 4, 22, 13, 3];
        let a = whole.rows(&ids, &dev).into_data();
        let b = split.rows(&ids, &dev).into_data();
        assert_eq!(b.shape().to_vec(), vec![1, ids.len(), cols]);
        assert_eq!(a, b, "rows are copies: exactly equal");
    }
}
