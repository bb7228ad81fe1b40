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

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::spec::{AttentionKind, ModelSpec};

/// Where a group's K/V live.
// A few of these per layer: the size of the tensor variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum KvData {
    /// Burn tensors `[1, h, T, D]` (the exact path and the GPU backends).
    Tensor { k: Tensor<4>, v: Tensor<4> },
    /// Host rows for the CPU kernels: one [`HeadRows`] per KV head of the group.
    Host {
        heads: Vec<HeadRows>,
        d: usize,
        device: Device,
    },
}

/// One KV head's entries on the host, `[T, D]` row-major from row `start`. Appends are amortised
/// O(1) (a growing `Vec`, not a re-concatenation of the whole cache every step), and sliding
/// trims advance `start`, compacting only once the dead prefix outgrows the live rows.
///
/// The buffers are shared copy-on-write: cloning a cache (every method of an eval or a bench
/// starts from one prefilled cache) copies nothing, a compression gathers its kept rows
/// straight from the shared buffers, and only a clone that grows pays for its own copy.
///
/// Entries are stored as f16 (as llama.cpp's default KV cache): half the memory and half the
/// bytes every decode step reads; the attention kernels widen them to f32 on load, and the
/// presses see f32 tensors.
#[derive(Clone, Debug, Default)]
struct HeadRows {
    k: Arc<Vec<f16>>,
    v: Arc<Vec<f16>>,
    start: usize,
}

/// Appends `src` to a shared buffer as f16 (copying the buffer first if it is shared). When
/// it must grow, it grows to `room` elements if that is more than it needs (else as `Vec`
/// does, doubling).
fn push_f16(buf: &mut Arc<Vec<f16>>, src: &[f32], room: usize) {
    let b = Arc::make_mut(buf);
    let n = b.len();
    if n + src.len() > b.capacity() && room > n + src.len() {
        b.reserve_exact(room - n);
    }
    b.resize(n + src.len(), f16::ZERO);
    b[n..].convert_from_f32_slice(src);
}

impl HeadRows {
    fn rows<'a>(&'a self, buf: &'a [f16], d: usize) -> &'a [f16] {
        &buf[self.start * d..]
    }

    fn drop_front(&mut self, n: usize, d: usize) {
        self.start += n;
        let live = self.k.len() / d - self.start;
        if self.start >= live.max(64) {
            let dead = self.start * d;
            for buf in [&mut self.k, &mut self.v] {
                match Arc::get_mut(buf) {
                    Some(b) => drop(b.drain(..dead)),
                    // Shared: copy only the live rows.
                    None => *buf = Arc::new(buf[dead..].to_vec()),
                }
            }
            self.start = 0;
        }
    }

    fn gather(&self, idx: &[usize], d: usize) -> HeadRows {
        let (k, v) = (self.rows(&self.k, d), self.rows(&self.v, d));
        let mut out_k = Vec::with_capacity(idx.len() * d);
        let mut out_v = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            out_k.extend_from_slice(&k[i * d..(i + 1) * d]);
            out_v.extend_from_slice(&v[i * d..(i + 1) * d]);
        }
        HeadRows {
            k: Arc::new(out_k),
            v: Arc::new(out_v),
            start: 0,
        }
    }
}

/// Cached K/V for a contiguous range of KV heads of one layer.
#[derive(Clone, Debug)]
pub struct HeadGroup {
    data: KvData,
    /// Original position of each of the `T` entries, strictly increasing.
    pub positions: Vec<i64>,
    /// Index of this group's first KV head within the layer.
    pub first_head: usize,
}

impl HeadGroup {
    pub fn n_heads(&self) -> usize {
        match &self.data {
            KvData::Tensor { k, .. } => k.dims()[1],
            KvData::Host { heads, .. } => heads.len(),
        }
    }
    pub fn len(&self) -> usize {
        self.positions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
    /// Bytes per stored K or V element: tensors in the device's float type, f16 host rows.
    pub fn elem_bytes(&self) -> usize {
        match &self.data {
            KvData::Tensor { k, .. } => k.dtype().size(),
            KvData::Host { .. } => std::mem::size_of::<f16>(),
        }
    }

    pub fn head_dim(&self) -> usize {
        match &self.data {
            KvData::Tensor { k, .. } => k.dims()[3],
            KvData::Host { d, .. } => *d,
        }
    }

    /// Keys `[1, h, T, D]` after RoPE (materialised from the host rows on the kernel path).
    pub fn k(&self) -> Tensor<4> {
        self.tensor(true)
    }

    /// Values `[1, h, T, D]`.
    pub fn v(&self) -> Tensor<4> {
        self.tensor(false)
    }

    fn tensor(&self, keys: bool) -> Tensor<4> {
        match &self.data {
            KvData::Tensor { k, v } => {
                let x = if keys { k.clone() } else { v.clone() };
                // An emptied group keeps one stale row so its tensor stays valid: never expose it.
                let t = self.len();
                let stored = x.dims()[2];
                if stored == t {
                    x
                } else {
                    x.narrow(2, stored - t, t)
                }
            }
            KvData::Host { heads, d, device } => {
                let mut data = vec![0.0f32; heads.len() * self.len() * d];
                for (h, out) in heads.iter().zip(data.chunks_exact_mut(self.len() * d)) {
                    h.rows(if keys { &h.k } else { &h.v }, *d)
                        .convert_to_f32_slice(out);
                }
                Tensor::from_data(
                    TensorData::new(data, [1, heads.len(), self.len(), *d]),
                    device,
                )
            }
        }
    }

    /// Head `h`'s (of this group) keys and values as host rows `[T, D]` (f16), on the kernel
    /// path.
    pub fn host_rows(&self, h: usize) -> Option<(&[f16], &[f16])> {
        match &self.data {
            KvData::Host { heads, d, .. } => {
                let r = &heads[h];
                Some((r.rows(&r.k, *d), r.rows(&r.v, *d)))
            }
            KvData::Tensor { .. } => None,
        }
    }

    fn keep_indices(&mut self, idx: &[usize]) {
        debug_assert!(idx.windows(2).all(|w| w[0] < w[1]), "indices sorted");
        if idx.len() == self.len() {
            return;
        }
        match &mut self.data {
            KvData::Tensor { k, v } => {
                let device = k.device();
                let t = Tensor::<1, Int>::from_data(
                    TensorData::new(
                        idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                        [idx.len()],
                    ),
                    &device,
                );
                *k = k.clone().select(2, t.clone());
                *v = v.clone().select(2, t);
            }
            KvData::Host { heads, d, .. } => {
                for h in heads.iter_mut() {
                    *h = h.gather(idx, *d);
                }
            }
        }
        self.positions = idx.iter().map(|&i| self.positions[i]).collect();
    }

    /// This group's head `h` alone, as a group of its own (for per-head eviction).
    fn single_head(&self, h: usize) -> HeadGroup {
        let data = match &self.data {
            KvData::Tensor { k, v } => KvData::Tensor {
                k: k.clone().narrow(1, h, 1),
                v: v.clone().narrow(1, h, 1),
            },
            KvData::Host { heads, d, device } => KvData::Host {
                heads: vec![heads[h].clone()],
                d: *d,
                device: device.clone(),
            },
        };
        HeadGroup {
            data,
            positions: self.positions.clone(),
            first_head: self.first_head + h,
        }
    }

    fn drop_front(&mut self, cut: usize) {
        let t = self.len();
        self.positions.drain(..cut);
        match &mut self.data {
            KvData::Tensor { k, v } => {
                // Keep one (stale) row when emptied so the tensor stays valid; `len()` is 0.
                let keep_from = if cut >= t { t - 1 } else { cut };
                *k = k.clone().narrow(2, keep_from, t - keep_from);
                *v = v.clone().narrow(2, keep_from, t - keep_from);
            }
            KvData::Host { heads, d, .. } => {
                for h in heads.iter_mut() {
                    h.drop_front(cut, *d);
                }
            }
        }
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
    /// Tokens the host rows of a full-attention layer make room for when they grow (see
    /// [`KvCache::reserve_tokens`]); 0: `Vec`'s doubling.
    room_tokens: usize,
}

impl LayerCache {
    pub fn new(attention: AttentionKind, n_kv_heads: usize) -> Self {
        LayerCache {
            attention,
            n_kv_heads,
            groups: Vec::new(),
            room_tokens: 0,
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
                data: KvData::Tensor { k, v },
                positions: positions.to_vec(),
                first_head: 0,
            });
            return;
        }
        if let KvData::Host { device, .. } = &self.groups[0].data {
            // A host cache (the kernel path) appended to through tensors — an observer replaying
            // attention on a compressed copy, as the profiler's layer-error probe does.
            let device = device.clone();
            let d = k.dims()[3];
            let to_vec = |t: Tensor<4>| t.into_data().convert::<f32>().try_into_vec::<f32>();
            let (k, v) = (to_vec(k), to_vec(v));
            let (k, v) = (k.expect("f32 keys"), v.expect("f32 values"));
            self.append_host(&k, &v, d, positions, &device);
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
            let KvData::Tensor { k: gk, v: gv } = &mut g.data else {
                unreachable!("host groups are appended to above; a layer's groups share storage")
            };
            if g.positions.is_empty() {
                *gk = kg;
                *gv = vg;
            } else {
                *gk = Tensor::cat(vec![gk.clone(), kg], 2);
                *gv = Tensor::cat(vec![gv.clone(), vg], 2);
            }
            g.positions.extend_from_slice(positions);
        }
    }

    /// Appends host K/V (the CPU kernel path): `k`, `v` are `[H_kv, S, D]` row-major.
    pub fn append_host(
        &mut self,
        k: &[f32],
        v: &[f32],
        d: usize,
        positions: &[i64],
        device: &Device,
    ) {
        let s = positions.len();
        debug_assert_eq!(k.len(), self.n_kv_heads * s * d);
        if self.groups.is_empty() {
            self.groups.push(HeadGroup {
                data: KvData::Host {
                    heads: vec![HeadRows::default(); self.n_kv_heads],
                    d,
                    device: device.clone(),
                },
                positions: Vec::new(),
                first_head: 0,
            });
        }
        for g in &mut self.groups {
            debug_assert!(g.positions.last().is_none_or(|&p| p < positions[0]));
            let KvData::Host { heads, .. } = &mut g.data else {
                panic!("a cache filled with tensors gets tensor appends");
            };
            // Sliding-window layers drop their old rows, so they never need the room.
            let room = match self.attention.window() {
                None => self.room_tokens * d,
                Some(_) => 0,
            };
            for (i, h) in heads.iter_mut().enumerate() {
                let head = g.first_head + i;
                push_f16(&mut h.k, &k[head * s * d..(head + 1) * s * d], room);
                push_f16(&mut h.v, &v[head * s * d..(head + 1) * s * d], room);
            }
            g.positions.extend_from_slice(positions);
        }
    }

    /// Drops entries whose position is below `min_pos` (sliding-window layers call this so they
    /// never hold more than their window).
    pub fn drop_before(&mut self, min_pos: i64) {
        for g in &mut self.groups {
            let cut = g.positions.partition_point(|&p| p < min_pos);
            if cut > 0 {
                g.drop_front(cut);
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
                        let mut hg = g.single_head(h);
                        hg.keep_indices(&per_head[hg.first_head]);
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
            .map(|g| 2 * g.n_heads() * g.len() * g.head_dim() * g.elem_bytes())
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

    /// Makes the host rows of full-attention layers grow straight to `tokens` entries when they
    /// grow: a prompt's prefill then fills them without the doubling copies, and decoding up to
    /// that many tokens appends in place. At 16K tokens the first decoded token used to move
    /// each global layer's 8 MiB K and V into 16 MiB buffers, the largest step of peak RSS.
    /// Untouched room costs address space, not memory.
    pub fn reserve_tokens(&mut self, tokens: usize) {
        self.layers.iter_mut().for_each(|l| l.room_tokens = tokens);
    }

    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Original positions of the entries, per layer and KV head: what a compression kept, in a
    /// form another engine's selection can be compared with (`generate --kept-positions`).
    pub fn positions_per_head(&self) -> Vec<Vec<Vec<i64>>> {
        self.layers
            .iter()
            .map(|l| {
                let mut out = vec![Vec::new(); l.n_kv_heads];
                for g in l.groups() {
                    for h in 0..g.n_heads() {
                        out[g.first_head + h] = g.positions.clone();
                    }
                }
                out
            })
            .collect()
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
        let k: Vec<f32> = l.groups()[0].k().to_data().try_to_vec().unwrap();
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
        let c = KvCache {
            layers: vec![l],
            next_pos: 5,
        };
        assert_eq!(
            c.positions_per_head(),
            vec![vec![vec![1, 4], vec![0, 2, 3, 4]]]
        );
    }

    #[test]
    fn drop_before_trims_by_position() {
        let mut l = LayerCache::new(AttentionKind::Sliding(3), 1);
        l.append(kv(1, 5, 0.0), kv(1, 5, 0.0), &[0, 1, 2, 3, 4]);
        l.retain(&KeepSet::Shared(vec![0, 2, 4]));
        l.drop_before(2);
        assert_eq!(l.positions(), &[2, 4]);
        assert_eq!(l.groups()[0].k().dims()[2], 2);
    }

    /// A clone shares the host buffers until one side writes: appends and trims on the clone
    /// leave the original untouched, and compressing the clone gathers from the shared rows.
    #[test]
    fn host_clones_are_copy_on_write() {
        let (h, d) = (1, 4);
        let mut a = LayerCache::new(AttentionKind::Full, h);
        let k: Vec<f32> = (0..8 * d).map(|i| i as f32).collect();
        let pos: Vec<i64> = (0..8).collect();
        a.append_host(&k, &k, d, &pos, &dev());
        let before: Vec<f32> = a.groups()[0].k().to_data().try_to_vec().unwrap();
        let mut b = a.clone();
        let (ka, _) = a.groups()[0].host_rows(0).unwrap();
        let (kb, _) = b.groups()[0].host_rows(0).unwrap();
        assert!(std::ptr::eq(ka, kb), "a clone shares its buffers");
        b.append_host(&[100.0; 4], &[100.0; 4], d, &[8], &dev());
        b.retain(&KeepSet::Shared(vec![1, 3, 8]));
        let after: Vec<f32> = a.groups()[0].k().to_data().try_to_vec().unwrap();
        assert_eq!(before, after);
        assert_eq!(a.positions(), &pos[..]);
        assert_eq!(b.positions(), &[1, 3, 8]);
        let kb: Vec<f32> = b.groups()[0].k().to_data().try_to_vec().unwrap();
        assert_eq!(kb[..4], before[4..8]);
        assert_eq!(kb[8..], [100.0; 4]);
    }

    /// Tensor appends to a host cache (the profiler's layer-error probe replays attention on
    /// compressed copies of a fast-path cache) store like host appends, per-head groups too.
    #[test]
    fn tensor_appends_to_a_host_cache() {
        let (h, d) = (2, 4);
        let k: Vec<f32> = (0..h * 3 * d).map(|i| i as f32).collect();
        let mut a = LayerCache::new(AttentionKind::Full, h);
        a.append_host(&k, &k, d, &[0, 1, 2], &dev());
        a.retain(&KeepSet::PerHead(vec![vec![0, 2], vec![1]]));
        let mut b = a.clone();
        let nk: Vec<f32> = (0..h * d).map(|i| 50.0 + i as f32).collect();
        a.append_host(&nk, &nk, d, &[3], &dev());
        let t = Tensor::from_data(TensorData::new(nk.clone(), [1, h, 1, d]), &dev());
        b.append(t.clone(), t, &[3]);
        for (ga, gb) in a.groups().iter().zip(b.groups()) {
            assert_eq!(ga.positions, gb.positions);
            let ka: Vec<f32> = ga.k().to_data().try_to_vec().unwrap();
            let kb: Vec<f32> = gb.k().to_data().try_to_vec().unwrap();
            assert_eq!(ka, kb);
        }
    }

    /// Host storage (the kernel path) behaves exactly like tensor storage: appends, sliding
    /// trims (incl. the lazy compaction), shared and per-head eviction give the same K/V
    /// (values chosen exact in f16, the host format), in half the bytes.
    #[test]
    fn host_storage_matches_tensor_storage() {
        let (h, d) = (2, 3);
        let mut a = LayerCache::new(AttentionKind::Sliding(100), h);
        let mut b = LayerCache::new(AttentionKind::Sliding(100), h);
        let mut next = 0i64;
        let push = |a: &mut LayerCache, b: &mut LayerCache, s: usize, next: &mut i64| {
            let pos: Vec<i64> = (*next..*next + s as i64).collect();
            *next += s as i64;
            // Distinct integers below 2048 within a push: exact in f16.
            let k: Vec<f32> = (0..h * s * d)
                .map(|i| ((pos[0] as usize * 37 + i) % 2039) as f32)
                .collect();
            let v: Vec<f32> = k.iter().map(|x| -x).collect();
            a.append(
                Tensor::from_data(TensorData::new(k.clone(), [1, h, s, d]), &dev()),
                Tensor::from_data(TensorData::new(v.clone(), [1, h, s, d]), &dev()),
                &pos,
            );
            b.append_host(&k, &v, d, &pos, &dev());
        };
        let same = |a: &LayerCache, b: &LayerCache| {
            assert_eq!(a.groups().len(), b.groups().len());
            for (ga, gb) in a.groups().iter().zip(b.groups()) {
                assert_eq!(ga.positions, gb.positions);
                let (ka, kb): (Vec<f32>, Vec<f32>) = (
                    ga.k().to_data().try_to_vec().unwrap(),
                    gb.k().to_data().try_to_vec().unwrap(),
                );
                assert_eq!(ka, kb);
                let (va, vb): (Vec<f32>, Vec<f32>) = (
                    ga.v().to_data().try_to_vec().unwrap(),
                    gb.v().to_data().try_to_vec().unwrap(),
                );
                assert_eq!(va, vb);
                for hh in 0..gb.n_heads() {
                    let (k, _) = gb.host_rows(hh).unwrap();
                    let k: Vec<f32> = k.iter().map(|x| x.to_f32()).collect();
                    assert_eq!(k, &kb[hh * gb.len() * d..(hh + 1) * gb.len() * d]);
                }
            }
            assert_eq!(a.bytes(), 2 * b.bytes());
        };
        push(&mut a, &mut b, 70, &mut next);
        same(&a, &b);
        // Many single-token steps with a trim each: the host rows compact lazily.
        for _ in 0..150 {
            push(&mut a, &mut b, 1, &mut next);
            a.drop_before(next - 80);
            b.drop_before(next - 80);
        }
        same(&a, &b);
        let keep: Vec<usize> = (0..a.positions().len()).filter(|i| i % 3 == 0).collect();
        a.retain(&KeepSet::Shared(keep.clone()));
        b.retain(&KeepSet::Shared(keep));
        same(&a, &b);
        let n = a.positions().len();
        let per_head = vec![vec![0, n - 1], (1..n).collect()];
        a.retain(&KeepSet::PerHead(per_head.clone()));
        b.retain(&KeepSet::PerHead(per_head));
        same(&a, &b);
        push(&mut a, &mut b, 2, &mut next);
        same(&a, &b);
    }
}
