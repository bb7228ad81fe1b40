//! Loading the decoder's tensors: by slot (the family names them in HF files, the GGUF
//! convention in GGUF files), shape-checked, transformed as the family needs, kept in their
//! stored block format where the CPU kernels read it, and tracked so that unused tensors are
//! reported.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

use super::layers::{DenseMatrix, GPU_PART_BYTES, Linear, LinearWeight, Mlp, RmsNorm};
use super::transformer::{Attention, DecoderLayer};
use super::{Family, Slot, gguf_name};
use crate::device::{BackendKind, RuntimeDevice, WeightFormat};
use crate::kernels::blocks::BlockFormat;
use crate::kernels::qmatrix::QMatrix;
use crate::kernels::qmatrix::WeightBytes;
use crate::spec::ModelSpec;
use crate::weights::{LoadError, SourceKind, WeightSource};

/// Loads tensors by slot, checks shapes, applies the family's transforms and remembers what
/// was used so that unexpected extra tensors are reported.
pub(super) struct Weights<'a> {
    pub(super) source: &'a dyn WeightSource,
    pub(super) family: &'a dyn Family,
    pub(super) spec: &'a ModelSpec,
    pub(super) device: &'a RuntimeDevice,
    pub(super) consumed: RefCell<HashSet<String>>,
}

impl Weights<'_> {
    /// An RMSNorm weight of `n` values.
    pub(super) fn norm(
        &self,
        slot: Slot,
        layer: Option<usize>,
        n: usize,
    ) -> Result<RmsNorm, LoadError> {
        Ok(RmsNorm::new(
            self.take::<1>(slot, layer, [n])?,
            self.spec.rms_norm_eps,
        ))
    }

    /// A `[out, inp]` projection.
    pub(super) fn linear(
        &self,
        slot: Slot,
        layer: Option<usize>,
        out: usize,
        inp: usize,
    ) -> Result<Linear, LoadError> {
        Ok(Linear::new(self.take_matrix(slot, layer, [out, inp])?))
    }

    /// Decoder layer `i`: attention (with biases and q/k norms where the spec has them), MLP and
    /// norms.
    pub(super) fn layer(&self, i: usize) -> Result<DecoderLayer, LoadError> {
        let (spec, device) = (self.spec, self.device);
        let (h, d) = (spec.hidden_size, spec.head_dim);
        let li = Some(i);
        let mut q = self.linear(Slot::Q, li, spec.q_dim(), h)?;
        let mut k = self.linear(Slot::K, li, spec.kv_dim(), h)?;
        let mut v = self.linear(Slot::V, li, spec.kv_dim(), h)?;
        if spec.qkv_bias {
            q = q.with_bias(self.take::<1>(Slot::QBias, li, [spec.q_dim()])?);
            k = k.with_bias(self.take::<1>(Slot::KBias, li, [spec.kv_dim()])?);
            v = v.with_bias(self.take::<1>(Slot::VBias, li, [spec.kv_dim()])?);
        }
        let (q_norm, k_norm) = if spec.qk_norm {
            (
                Some(self.norm(Slot::QNorm, li, d)?),
                Some(self.norm(Slot::KNorm, li, d)?),
            )
        } else {
            (None, None)
        };
        let attn = Attention {
            layer: i,
            q,
            k,
            v,
            o: self.linear(Slot::O, li, h, spec.q_dim())?,
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
        Ok(DecoderLayer {
            attn_norm: self.norm(Slot::AttnNorm, li, h)?,
            attn,
            post_attn_norm: if sandwich {
                Some(self.norm(Slot::PostAttnNorm, li, h)?)
            } else {
                None
            },
            ffn_norm: self.norm(Slot::FfnNorm, li, h)?,
            mlp: Mlp {
                gate: self.linear(Slot::Gate, li, spec.intermediate_size, h)?,
                up: self.linear(Slot::Up, li, spec.intermediate_size, h)?,
                down: self.linear(Slot::Down, li, h, spec.intermediate_size)?,
                activation: spec.activation,
            },
            post_ffn_norm: if sandwich {
                Some(self.norm(Slot::PostFfnNorm, li, h)?)
            } else {
                None
            },
        })
    }

    pub(super) fn name(&self, slot: Slot, layer: Option<usize>) -> String {
        match self.source.kind() {
            SourceKind::Safetensors => self.family.hf_name(slot, layer),
            SourceKind::Gguf => gguf_name(slot, layer),
        }
    }

    pub(super) fn has(&self, slot: Slot, layer: Option<usize>) -> bool {
        self.source.contains(&self.name(slot, layer))
    }

    pub(super) fn take<const D: usize>(
        &self,
        slot: Slot,
        layer: Option<usize>,
        expected: [usize; D],
    ) -> Result<Tensor<D>, LoadError> {
        let data = self.take_f32(slot, layer, &expected)?;
        Ok(Tensor::from_data(
            TensorData::new(data, expected),
            &self.device.device,
        ))
    }

    /// A tensor as f32 after the family's transform, shape-checked.
    pub(super) fn take_f32(
        &self,
        slot: Slot,
        layer: Option<usize>,
        expected: &[usize],
    ) -> Result<Vec<f32>, LoadError> {
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
        Ok(data)
    }

    /// A weight matrix `[out, in]`: on the CPU kernel path in its stored block format (or the
    /// `--weights` conversion), borrowed from the file's map where no row reordering is needed;
    /// otherwise dense f32.
    pub(super) fn take_matrix(
        &self,
        slot: Slot,
        layer: Option<usize>,
        expected: [usize; 2],
    ) -> Result<LinearWeight, LoadError> {
        if !self.device.uses_cpu_kernels() {
            // One buffer holds any matrix on the CPU; GPU buffers are bounded.
            let part_bytes = match self.device.kind {
                BackendKind::Flex => usize::MAX,
                BackendKind::Cuda | BackendKind::Wgpu => GPU_PART_BYTES,
            };
            let data = self.take_f32(slot, layer, &expected)?;
            return Ok(LinearWeight::Dense(DenseMatrix::from_rows(
                data,
                expected,
                part_bytes,
                &self.device.device,
            )));
        }
        let name = self.name(slot, layer);
        let [rows, cols] = expected;
        let target = match self.device.weights {
            WeightFormat::Native => None,
            WeightFormat::Q8_0 => Some(BlockFormat::Q8_0),
            WeightFormat::F16 => Some(BlockFormat::F16),
            WeightFormat::F32 => Some(BlockFormat::F32),
        };
        let raw = if self.source.contains(&name) {
            self.source.load_raw(&name)?
        } else {
            None
        };
        let label = name.clone();
        let kernel_err = |e: crate::kernels::qmatrix::ShapeError| {
            LoadError::Format(format!("tensor `{label}`: {}", e.0))
        };
        let mut q = match raw {
            Some(raw) if target.is_none_or(|t| t == raw.format) => {
                if raw.shape != expected {
                    return Err(LoadError::Shape {
                        name,
                        expected: expected.to_vec(),
                        found: raw.shape,
                    });
                }
                let bytes = match self
                    .family
                    .row_order(self.spec, self.source.kind(), slot, rows)
                {
                    Some(order) => {
                        let rb = raw.format.row_bytes(cols).ok_or_else(|| {
                            LoadError::Format(format!(
                                "tensor `{name}`: {cols} columns are not a whole number of {} blocks",
                                raw.format.name()
                            ))
                        })?;
                        let mut v = Vec::with_capacity(rows * rb);
                        for &r in &order {
                            v.extend_from_slice(&raw.bytes[r * rb..(r + 1) * rb]);
                        }
                        WeightBytes::Owned(v)
                    }
                    None => raw.bytes,
                };
                self.consumed.borrow_mut().insert(name);
                QMatrix::new(raw.format, rows, cols, bytes).map_err(kernel_err)?
            }
            // No kernel for the stored format, or a conversion was asked for: through f32.
            _ => {
                let data = self.take_f32(slot, layer, &expected)?;
                let format = target.unwrap_or(BlockFormat::F32);
                QMatrix::from_f32(format, rows, cols, &data).map_err(kernel_err)?
            }
        };
        // Where the CPU has AVX-512 VNNI, integer formats run interleaved (batched decode
        // shares each weight pair across sessions; see `kernels::qmatrix::packed`).
        if crate::kernels::simd::avx512() {
            q.pack();
        }
        Ok(LinearWeight::Kernel(Arc::new(q)))
    }

    pub(super) fn check_all_consumed(&self) -> Result<(), LoadError> {
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
