//! The KV cache, shaped for eviction.
//!
//! Keys are stored after RoPE. Every kept entry carries its original position, so a cache that
//! has been compressed still knows where each entry came from: new tokens take positions from
//! the *logical* length ([`KvCache::next_pos`]), never from the physical length, and sliding
//! layers mask by position, not by slot.
//!
//! A layer holds one or more [`HeadGroup`]s. Normally one group holds all KV heads
//! (`[B, H_kv, T, D]`); a method that evicts a different number of entries per KV head (Ada-KV)
//! splits the layer into one group per head, each with its own length — physically ragged, not
//! masked.

use burn::tensor::{Int, Tensor, TensorData};

use crate::spec::{AttentionKind, ModelSpec};

/// Cached K/V for a contiguous range of KV heads of one layer.
#[derive(Clone, Debug)]
pub struct HeadGroup {
    /// `[B, h, T, D]`, after RoPE.
    pub k: Tensor<4>,
    /// `[B, h, T, D]`.
    pub v: Tensor<4>,
    /// Original position of each of the `T` entries, strictly increasing.
    pub positions: Vec<i64>,
    /// Index of this group's first KV head within the layer.
    pub first_head: usize,
}

impl HeadGroup {
    pub fn n_heads(&self) -> usize {
        self.k.dims()[1]
    }
    pub fn len(&self) -> usize {
        self.positions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    fn keep_indices(&mut self, idx: &[usize]) {
        debug_assert!(idx.windows(2).all(|w| w[0] < w[1]), "indices sorted");
        if idx.len() == self.len() {
            return;
        }
        let device = self.k.device();
        let t = Tensor::<1, Int>::from_data(
            TensorData::new(
                idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [idx.len()],
            ),
            &device,
        );
        self.k = self.k.clone().select(2, t.clone());
        self.v = self.v.clone().select(2, t);
        self.positions = idx.iter().map(|&i| self.positions[i]).collect();
    }
}

/// What a compression method decided to keep in one layer: indices into the layer's current
/// entries, sorted ascending (so kept entries stay in position order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepSet {
    /// Same entries for every KV head (CompressKV, SnapKV, ...).
    Shared(Vec<usize>),
    /// One list per KV head (Ada-KV); the layer becomes ragged.
    PerHead(Vec<Vec<usize>>),
}

#[derive(Clone, Debug)]
pub struct LayerCache {
    pub attention: AttentionKind,
    pub n_kv_heads: usize,
    groups: Vec<HeadGroup>,
}

impl LayerCache {
    pub fn new(attention: AttentionKind, n_kv_heads: usize) -> Self {
        LayerCache {
            attention,
            n_kv_heads,
            groups: Vec::new(),
        }
    }

    pub fn groups(&self) -> &[HeadGroup] {
        &self.groups
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.is_empty())
    }

    /// Entries per KV head.
    pub fn lens_per_head(&self) -> Vec<usize> {
        let mut out = vec![0; self.n_kv_heads];
        for g in &self.groups {
            for h in 0..g.n_heads() {
                out[g.first_head + h] = g.len();
            }
        }
        out
    }

    /// Total entries summed over KV heads.
    pub fn entries(&self) -> usize {
        self.lens_per_head().iter().sum()
    }

    /// Positions of the entries (those of the first group; identical across heads unless ragged).
    pub fn positions(&self) -> &[i64] {
        self.groups.first().map(|g| &g.positions[..]).unwrap_or(&[])
    }

    pub fn is_ragged(&self) -> bool {
        self.groups.len() > 1
    }

    /// Appends `k`, `v` `[B, H_kv, S, D]` for the given positions (all past existing ones).
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>, positions: &[i64]) {
        debug_assert_eq!(k.dims()[2], positions.len());
        if self.groups.is_empty() {
            self.groups.push(HeadGroup {
                k,
                v,
                positions: positions.to_vec(),
                first_head: 0,
            });
            return;
        }
        let single = self.groups.len() == 1;
        for g in &mut self.groups {
            debug_assert!(g.positions.last().is_none_or(|&p| p < positions[0]));
            let (kg, vg) = if single {
                (k.clone(), v.clone())
            } else {
                (
                    k.clone().narrow(1, g.first_head, g.n_heads()),
                    v.clone().narrow(1, g.first_head, g.n_heads()),
                )
            };
            if g.is_empty() {
                g.k = kg;
                g.v = vg;
            } else {
                g.k = Tensor::cat(vec![g.k.clone(), kg], 2);
                g.v = Tensor::cat(vec![g.v.clone(), vg], 2);
            }
            g.positions.extend_from_slice(positions);
        }
    }

    /// Drops entries whose position is below `min_pos` (sliding-window layers call this so they
    /// never hold more than their window).
    pub fn drop_before(&mut self, min_pos: i64) {
        for g in &mut self.groups {
            let cut = g.positions.partition_point(|&p| p < min_pos);
            if cut == 0 {
                continue;
            }
            let t = g.len();
            g.positions.drain(..cut);
            if g.positions.is_empty() {
                // Keep a zero-length group: burn tensors may not be empty on every backend, so
                // store a one-entry tensor and rely on `positions` for the logical length.
                g.k = g.k.clone().narrow(2, t - 1, 1);
                g.v = g.v.clone().narrow(2, t - 1, 1);
            } else {
                g.k = g.k.clone().narrow(2, cut, t - cut);
                g.v = g.v.clone().narrow(2, cut, t - cut);
            }
        }
    }

    /// Keeps only the given entries (physically: the other entries' memory is released).
    pub fn retain(&mut self, keep: &KeepSet) {
        match keep {
            KeepSet::Shared(idx) => {
                for g in &mut self.groups {
                    g.keep_indices(idx);
                }
            }
            KeepSet::PerHead(per_head) => {
                assert_eq!(per_head.len(), self.n_kv_heads, "one keep list per KV head");
                let mut out = Vec::with_capacity(self.n_kv_heads);
                for g in &self.groups {
                    for h in 0..g.n_heads() {
                        let head = g.first_head + h;
                        let mut hg = HeadGroup {
                            k: g.k.clone().narrow(1, h, 1),
                            v: g.v.clone().narrow(1, h, 1),
                            positions: g.positions.clone(),
                            first_head: head,
                        };
                        hg.keep_indices(&per_head[head]);
                        out.push(hg);
                    }
                }
                self.groups = out;
            }
        }
    }

    /// Bytes held by K and V of this layer (f32).
    pub fn bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                let d = g.k.dims();
                2 * d[0] * d[1] * g.len() * d[3] * std::mem::size_of::<f32>()
            })
            .sum()
    }
}

/// The whole model's cache.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    /// Logical length: the position the next token will take.
    pub next_pos: usize,
}

impl KvCache {
    pub fn new(spec: &ModelSpec) -> Self {
        KvCache {
            layers: spec
                .layers
                .iter()
                .map(|l| LayerCache::new(l.attention, spec.n_kv_heads))
                .collect(),
            next_pos: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Entries per layer (summed over KV heads, divided by the head count: the mean per head).
    pub fn entries_per_layer(&self) -> Vec<usize> {
        self.layers
            .iter()
            .map(|l| l.entries() / l.n_kv_heads.max(1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    fn dev() -> burn::tensor::Device {
        crate::device::RuntimeDevice::cpu().device
    }

    fn kv(h: usize, t: usize, base: f32) -> Tensor<4> {
        let data: Vec<f32> = (0..h * t * 2).map(|i| base + i as f32).collect();
        Tensor::from_data(TensorData::new(data, [1, h, t, 2]), &dev())
    }

    #[test]
    fn positions_survive_eviction_and_new_entries_follow_logical_length() {
        let mut l = LayerCache::new(AttentionKind::Full, 2);
        l.append(kv(2, 6, 0.0), kv(2, 6, 100.0), &[0, 1, 2, 3, 4, 5]);
        l.retain(&KeepSet::Shared(vec![0, 3, 5]));
        assert_eq!(l.positions(), &[0, 3, 5]);
        assert_eq!(l.bytes(), 2 * 2 * 3 * 2 * 4);
        l.append(kv(2, 1, 50.0), kv(2, 1, 150.0), &[6]);
        assert_eq!(l.positions(), &[0, 3, 5, 6]);
        // Head 1, entry kept from slot 3: k values are base + (h*t + slot)*2 + d. Layout is
        // [1, 2, 4, 2] after the append: head 1 starts at 8, its second entry at 10.
        let k: Vec<f32> = l.groups()[0].k.to_data().try_to_vec().unwrap();
        assert_eq!(
            &k[10..12],
            &[(6 + 3) as f32 * 2.0, (6 + 3) as f32 * 2.0 + 1.0]
        );
    }

    #[test]
    fn per_head_retain_makes_ragged_groups() {
        let mut l = LayerCache::new(AttentionKind::Full, 2);
        l.append(kv(2, 4, 0.0), kv(2, 4, 0.0), &[0, 1, 2, 3]);
        l.retain(&KeepSet::PerHead(vec![vec![1], vec![0, 2, 3]]));
        assert!(l.is_ragged());
        assert_eq!(l.lens_per_head(), vec![1, 3]);
        assert_eq!(l.bytes(), 2 * (1 + 3) * 2 * 4);
        l.append(kv(2, 1, 0.0), kv(2, 1, 0.0), &[4]);
        assert_eq!(l.lens_per_head(), vec![2, 4]);
        assert_eq!(l.groups()[1].positions, vec![0, 2, 3, 4]);
    }

    #[test]
    fn drop_before_trims_by_position() {
        let mut l = LayerCache::new(AttentionKind::Sliding(3), 1);
        l.append(kv(1, 5, 0.0), kv(1, 5, 0.0), &[0, 1, 2, 3, 4]);
        l.retain(&KeepSet::Shared(vec![0, 2, 4]));
        l.drop_before(2);
        assert_eq!(l.positions(), &[2, 4]);
        assert_eq!(l.groups()[0].k.dims()[2], 2);
    }
}
