//! Hugging Face safetensors weights: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped. The exact path converts f32/f16/bf16 to f32
//! once at load (burn-flex would otherwise convert bf16 on every matmul); the CPU kernels keep
//! bf16/f16 as stored and borrow the bytes from the map.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::{LoadError, RawTensor, SourceKind, WeightSource};
use crate::kernels::blocks::BlockFormat;
use crate::kernels::qmatrix::WeightBytes;

pub struct SafetensorsSource {
    maps: Vec<(PathBuf, Arc<Mmap>)>,
    /// Tensor name → index into `maps`.
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open_dir(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let idx: serde_json::Value = super::read_json(&index_path)?;
            let map = idx
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    LoadError::Config(format!("{}: no `weight_map` object", index_path.display()))
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(LoadError::NotFound(format!(
                "no model.safetensors or model.safetensors.index.json in {}",
                dir.display()
            )));
        };
        let mut maps = Vec::new();
        let mut index = BTreeMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let f = File::open(&path).map_err(|e| LoadError::io(&path, e))?;
            // SAFETY: the file is opened read-only; weights are not expected to change while
            // loading (the same assumption every mmap-based loader makes).
            let mmap = unsafe { Mmap::map(&f) }.map_err(|e| LoadError::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                LoadError::Format(format!(
                    "{}: not a valid safetensors file: {e}",
                    path.display()
                ))
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((path, Arc::new(mmap)));
        }
        Ok(SafetensorsSource { maps, index })
    }
}

impl SafetensorsSource {
    /// The error for a tensor whose dtype neither path reads.
    fn unsupported_dtype(&self, name: &str) -> LoadError {
        let what = self
            .file_of(name)
            .ok()
            .and_then(|(path, mmap)| {
                let st = SafeTensors::deserialize(mmap).ok()?;
                let dtype = st.tensor(name).ok()?.dtype();
                Some(format!("has dtype {dtype:?} in {}", path.display()))
            })
            .unwrap_or_else(|| "has an unsupported dtype".into());
        LoadError::Unsupported(format!("tensor `{name}` {what}; supported: F32, F16, BF16"))
    }

    fn file_of(&self, name: &str) -> Result<&(PathBuf, Arc<Mmap>), LoadError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.into(),
                expected: "present".into(),
            })?;
        Ok(&self.maps[i])
    }
}

impl WeightSource for SafetensorsSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Safetensors
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn load(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), LoadError> {
        let raw = self
            .load_raw(name)?
            .ok_or_else(|| self.unsupported_dtype(name))?;
        let n: usize = raw.shape.iter().product();
        let mut data = vec![0.0f32; n];
        raw.format.dequantize(&raw.bytes, &mut data);
        Ok((data, raw.shape))
    }

    fn load_raw(&self, name: &str) -> Result<Option<RawTensor>, LoadError> {
        let (path, mmap) = self.file_of(name)?;
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| LoadError::Format(format!("{}: {e}", path.display())))?;
        let view = st
            .tensor(name)
            .map_err(|e| LoadError::Format(format!("{}: {name}: {e}", path.display())))?;
        let format = match view.dtype() {
            Dtype::F32 => BlockFormat::F32,
            Dtype::F16 => BlockFormat::F16,
            Dtype::BF16 => BlockFormat::BF16,
            _ => return Ok(None),
        };
        let data = view.data();
        // `data` is a sub-slice of the map: borrow it instead of copying.
        let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
        Ok(Some(RawTensor {
            format,
            shape: view.shape().to_vec(),
            bytes: WeightBytes::Shared {
                buf: mmap.clone(),
                start,
                len: data.len(),
            },
        }))
    }

    fn ignorable(&self, name: &str) -> bool {
        // Buffers some exports include, and the towers of multimodal checkpoints.
        name.ends_with("rotary_emb.inv_freq")
            || name.starts_with("vision_tower.")
            || name.starts_with("multi_modal_projector.")
    }
}
