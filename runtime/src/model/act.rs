//! The op layer's values. The decoder is written once (`transformer.rs`) over these two types;
//! each op runs on Burn when its input is a tensor (the exact path, the GPU backends) and on the
//! CPU kernels when it is host memory (the fast path), so the fast path never pays a Burn
//! dispatch or a copy between small ops. Conversions happen only where an observer, a press
//! or the caller asks for a tensor.

use burn::tensor::{Device, Tensor, TensorData};

/// Activations `[1, S, C]`.
// A Burn tensor is a large handle; boxing it would add an allocation to every op of the exact
// path for no gain (these values are moved, never stored in bulk).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Act {
    Tensor(Tensor<3>),
    /// Row-major `[S, C]` on the host.
    Host {
        data: Vec<f32>,
        s: usize,
        c: usize,
    },
}

impl Act {
    pub fn seq_len(&self) -> usize {
        match self {
            Act::Tensor(t) => t.dims()[1],
            Act::Host { s, .. } => *s,
        }
    }

    pub fn into_tensor(self, device: &Device) -> Tensor<3> {
        match self {
            Act::Tensor(t) => t,
            Act::Host { data, s, c } => Tensor::from_data(TensorData::new(data, [1, s, c]), device),
        }
    }

    /// Host rows `[S, C]` (copied out of a tensor when needed).
    pub fn into_host(self) -> (Vec<f32>, usize, usize) {
        match self {
            Act::Tensor(t) => {
                let [_, s, c] = t.dims();
                (to_host(t), s, c)
            }
            Act::Host { data, s, c } => (data, s, c),
        }
    }

    pub fn mul_scalar(self, f: f64) -> Act {
        match self {
            Act::Tensor(t) => Act::Tensor(t.mul_scalar(f)),
            Act::Host { mut data, s, c } => {
                let f = f as f32;
                data.iter_mut().for_each(|x| *x *= f);
                Act::Host { data, s, c }
            }
        }
    }

    /// The last `n` positions.
    pub fn tail(self, n: usize) -> Act {
        let s = self.seq_len();
        if n >= s {
            return self;
        }
        match self {
            Act::Tensor(t) => Act::Tensor(t.narrow(1, s - n, n)),
            Act::Host { data, c, .. } => Act::Host {
                data: data[(s - n) * c..].to_vec(),
                s: n,
                c,
            },
        }
    }
}

/// `a + b`: the residual connection, on the host when the left side is host memory.
impl std::ops::Add for Act {
    type Output = Act;

    fn add(self, other: Act) -> Act {
        match (self, other) {
            (Act::Tensor(a), Act::Tensor(b)) => Act::Tensor(a + b),
            (Act::Host { mut data, s, c }, other) => {
                let (b, ..) = other.into_host();
                data.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Act::Host { data, s, c }
            }
            (Act::Tensor(a), host) => {
                let device = a.device();
                Act::Tensor(a + host.into_tensor(&device))
            }
        }
    }
}

/// Per-head values `[1, H, S, D]` (queries, keys, values, attention outputs).
#[allow(clippy::large_enum_variant)] // as `Act`
#[derive(Clone, Debug)]
pub enum Heads {
    Tensor(Tensor<4>),
    /// Row-major `[H, S, D]` on the host.
    Host {
        data: Vec<f32>,
        h: usize,
        s: usize,
        d: usize,
    },
}

impl Heads {
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        match self {
            Heads::Tensor(t) => t.clone(),
            Heads::Host { data, h, s, d } => {
                Tensor::from_data(TensorData::new(data.clone(), [1, *h, *s, *d]), device)
            }
        }
    }

    /// The last `n` positions as a tensor (what the window capture keeps), copying only those.
    pub fn tail_tensor(&self, n: usize, device: &Device) -> Tensor<4> {
        match self {
            Heads::Tensor(t) => {
                let s = t.dims()[2];
                if n >= s {
                    t.clone()
                } else {
                    t.clone().narrow(2, s - n, n)
                }
            }
            Heads::Host { data, h, s, d } => {
                let n = n.min(*s);
                let mut out = Vec::with_capacity(h * n * d);
                for head in 0..*h {
                    let start = (head * s + s - n) * d;
                    out.extend_from_slice(&data[start..start + n * d]);
                }
                Tensor::from_data(TensorData::new(out, [1, *h, n, *d]), device)
            }
        }
    }

    /// `[S, C]` rows → `[H, S, D]` (C = H·D): the projection output split into heads.
    pub fn split_rows(rows: &[f32], s: usize, h: usize, d: usize) -> Heads {
        let mut data = vec![0.0f32; rows.len()];
        for t in 0..s {
            for head in 0..h {
                let src = &rows[(t * h + head) * d..(t * h + head + 1) * d];
                data[(head * s + t) * d..(head * s + t + 1) * d].copy_from_slice(src);
            }
        }
        Heads::Host { data, h, s, d }
    }

    /// `[H, S, D]` → `[S, H·D]` rows (the input of the output projection).
    pub fn merge_rows(data: &[f32], h: usize, s: usize, d: usize) -> Vec<f32> {
        let mut rows = vec![0.0f32; data.len()];
        for head in 0..h {
            for t in 0..s {
                let src = &data[(head * s + t) * d..(head * s + t + 1) * d];
                rows[(t * h + head) * d..(t * h + head + 1) * d].copy_from_slice(src);
            }
        }
        rows
    }
}

/// A tensor's values on the host in f32, whatever the device computes in (a copy on burn-flex;
/// the kernels' input, and every read-back of scores and logits).
pub fn to_host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// Host values back into a tensor on `device`.
pub fn from_host<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_merge_rows_are_inverse_and_match_burn_layout() {
        let (s, h, d) = (3, 2, 4);
        let rows: Vec<f32> = (0..s * h * d).map(|i| i as f32).collect();
        let Heads::Host { data, .. } = Heads::split_rows(&rows, s, h, d) else {
            unreachable!()
        };
        // Burn: reshape [1, S, H, D] then swap_dims(1, 2) → [1, H, S, D].
        let dev = crate::device::RuntimeDevice::cpu().device;
        let t = from_host(rows.clone(), [1, s, h, d], &dev).swap_dims(1, 2);
        assert_eq!(to_host(t), data);
        assert_eq!(Heads::merge_rows(&data, h, s, d), rows);
    }

    #[test]
    fn tail_tensor_keeps_the_last_positions_of_every_head() {
        let (h, s, d) = (2, 5, 3);
        let data: Vec<f32> = (0..h * s * d).map(|i| i as f32).collect();
        let heads = Heads::Host { data, h, s, d };
        let dev = crate::device::RuntimeDevice::cpu().device;
        let want = to_host(heads.to_tensor(&dev).narrow(2, 3, 2));
        assert_eq!(to_host(heads.tail_tensor(2, &dev)), want);
    }
}
