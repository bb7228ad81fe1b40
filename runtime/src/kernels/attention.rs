//! Decode / prefill attention over one KV head's cached entries.
//!
//! Flash-style: keys are visited in tiles of 64 with an online softmax
//! (running max `m`, running sum `l`, rescaled accumulator), so memory is
//! O(rows·d) and no R×T logits matrix is ever materialised.
//!
//! Query rows are processed in blocks of up to 4 rows with similar
//! visible ranges (the G heads of a GQA group, or consecutive causal
//! positions): each K/V row is loaded once per block instead of once per query
//! row, which is what makes decode with GQA bandwidth-efficient.
//!
//! Parallelism (rayon), chosen per call (`choose_plan`):
//! * little work (short decode): the calling thread does everything;
//! * many row blocks (prefill): groups of consecutive blocks are distributed over threads, and
//!   within a group the blocks take each key tile in turns, so K/V stream from memory once per
//!   group rather than once per block;
//! * few row blocks with long ranges (decode at 16K): each block's key range is
//!   split into chunks whose partial `(m, l, acc)` states are merged afterwards
//!   (split-K "flash-decoding").
//!
//! [`attend_prefill_tiles`] runs prefill-shaped calls (at least 64 query rows) on AMX tiles in
//! bf16 where [`simd::amx`] allows (`amx.rs`: 1K/4K-token prefills of the quantized Gemma 3
//! 270M ~1.3x/1.4x faster end to end); [`attend`], [`attend_at`] and everything smaller stay
//! on the f32 kernels below.
//!
//! Decode-shaped calls (≤ 8 row blocks) also software-prefetch V during QK and
//! the next tile's K during PV: that took single-thread 16K-token decode from
//! ~6.5 ms to ~3.5 ms here (DRAM-bound; the PV pass reads V column-strided).

use super::ops;
use super::simd::{self, SimdLevel};
use rayon::prelude::*;

/// Logits are `scale·q·k`, or `softcap·tanh(scale·q·k / softcap)` when
/// `softcap` is `Some` (Gemma 2 style logit soft-capping).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// A stored K/V element: f32, or f16 (the host KV cache's format, half the bytes per token).
pub trait KvElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// 8 consecutive elements as f32 lanes.
    ///
    /// # Safety
    /// AVX2+FMA+F16C present; 8 readable elements at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at `p`.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// Keys per online-softmax step: 64 logits per row fit on the stack and the
/// K/V tile stays in L2 for d ≤ 256.
const TILE: usize = 64;
/// Query rows sharing each K/V load (4 = Gemma's GQA group; 8 accumulators).
const MAX_ROWS: usize = 4;
/// Below this many multiply-adds (Σ rows·keys·d) rayon hand-off costs more
/// than it saves, so the call stays on the calling thread.
const PAR_MIN_WORK: usize = 1 << 19;
/// Split-K chunks are at least this many keys, so the merge stays negligible.
const SPLIT_MIN_KEYS: usize = 512;
/// Row blocks that take their key tiles in turns on one thread (see [`run_group`]).
const GROUP_BLOCKS: usize = 8;
/// K + V bytes above which blocks are grouped: half this machine's 2 MiB L2 per core.
const GROUP_MIN_KV_BYTES: usize = 1 << 20;
/// Up to this many row blocks per call, K/V are software-prefetched (decode).
const PREFETCH_MAX_BLOCKS: usize = 8;

/// Consecutive query rows `r0..r0+n` processed together, over the union
/// `lo..hi` of their visible ranges (`lo >= hi`: all rows empty).
#[derive(Debug, Clone, Copy)]
struct Block {
    r0: usize,
    n: usize,
    lo: usize,
    hi: usize,
}

impl Block {
    fn len(&self) -> usize {
        self.hi.saturating_sub(self.lo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Serial,
    Rows,
    /// Split each block's key range into (up to) this many chunks.
    Split(usize),
}

/// Running online-softmax state of a block's rows.
#[derive(Debug, Clone, Copy)]
struct State {
    m: [f32; MAX_ROWS],
    l: [f32; MAX_ROWS],
}

impl State {
    fn new() -> Self {
        State {
            m: [f32::NEG_INFINITY; MAX_ROWS],
            l: [0.0; MAX_ROWS],
        }
    }
}

/// Everything a worker needs; plain shared slices, hence `Sync`.
struct Ctx<'a, E> {
    level: SimdLevel,
    q: &'a [f32],
    k: &'a [E],
    v: &'a [E],
    d: usize,
    params: AttnParams,
    /// Per query row, `(lo, hi)` with `lo < hi`, or `(0, 0)` when empty.
    ranges: &'a [(usize, usize)],
    /// Software-prefetch K/V (AVX2): set when few row blocks share the keys,
    /// i.e. decode, where K/V stream from DRAM once. Prefill re-reads them from
    /// cache for every block, so there the hints would only cost issue slots.
    prefetch: bool,
}

/// For each query row `r` of `q` ([R, d] row-major: the G heads × S queries
/// that share this KV head), `out[r] = Σ_t softmax_t(logit(q_r, k_t)) v_t`
/// over the KV rows `visible(r) = (lo, hi)` of `k`/`v` ([T, d] row-major).
///
/// Masks are ranges because cached entries are sorted by position; the caller
/// computes them. Rows with an empty range (`lo >= hi`) output zeros.
/// `visible` is called once per row, on the calling thread (it need not be
/// `Sync`). NaN in q/k/v within a row's range makes that row NaN. Keys that a
/// row cannot see never touch that row, even when a row it is blocked with
/// sees them.
///
/// Panics if `d == 0`, lengths are not multiples of `d`, `v.len() != k.len()`,
/// `out.len() != q.len()`, or some `hi > T`.
pub fn attend<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    params: &AttnParams,
    visible: &dyn Fn(usize) -> (usize, usize),
    out: &mut [f32],
) {
    attend_at(simd::active(), q, k, v, d, params, visible, out)
}

/// [`attend`], except that calls of at least 64 query rows (prefill chunks) run on AMX tiles
/// where the CPU and OS allow (`amx.rs`): the logits f32-grade (q in two bf16 parts, f16 keys
/// exactly), the probabilities and values rounded to bf16 (an output within `2⁻⁸·max|v|`).
/// Meant for models whose prefill products already run in bf16 on the tiles (quantized weights,
/// [`super::qmatrix::QMatrix::prefill_on_tiles`]), where it adds error of the same order; f32
/// models keep [`attend`]'s f32 math.
pub fn attend_prefill_tiles<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    params: &AttnParams,
    visible: &dyn Fn(usize) -> (usize, usize),
    out: &mut [f32],
) {
    attend_plan(
        simd::active(),
        q,
        k,
        v,
        d,
        params,
        visible,
        out,
        None,
        simd::amx(),
    )
}

/// [`attend`] at an explicit level (lowered to the detected level if needed), always on the
/// f32 kernels (never the AMX tiles).
#[allow(clippy::too_many_arguments)]
pub fn attend_at<E: KvElem>(
    level: SimdLevel,
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    params: &AttnParams,
    visible: &dyn Fn(usize) -> (usize, usize),
    out: &mut [f32],
) {
    attend_plan(level, q, k, v, d, params, visible, out, None, false)
}

#[allow(clippy::too_many_arguments)]
fn attend_plan<E: KvElem>(
    level: SimdLevel,
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    params: &AttnParams,
    visible: &dyn Fn(usize) -> (usize, usize),
    out: &mut [f32],
    force: Option<Plan>,
    tiles: bool,
) {
    assert!(d > 0, "attend: d == 0");
    assert_eq!(q.len() % d, 0, "attend: q.len() not a multiple of d");
    assert_eq!(k.len() % d, 0, "attend: k.len() not a multiple of d");
    assert_eq!(v.len(), k.len(), "attend: v and k lengths differ");
    assert_eq!(out.len(), q.len(), "attend: out and q lengths differ");
    let (rows, t) = (q.len() / d, k.len() / d);
    let ranges: Vec<(usize, usize)> = (0..rows)
        .map(|r| {
            let (lo, hi) = visible(r);
            assert!(hi <= t, "attend: row {r} sees ..{hi} but only {t} KV rows");
            if lo < hi { (lo, hi) } else { (0, 0) }
        })
        .collect();
    #[cfg(target_arch = "x86_64")]
    if tiles && rows >= amx::MIN_ROWS && amx::head_dim_ok(d) {
        // SAFETY: `tiles` is only set where `simd::amx()` said yes; the shapes and ranges
        // were checked above.
        if unsafe { amx::attend(q, k, v, d, params, &ranges, out) } {
            return;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = tiles;
    let blocks = build_blocks(&ranges);
    let ctx = Ctx {
        level: level.min(simd::detected()),
        q,
        k,
        v,
        d,
        params: *params,
        ranges: &ranges,
        prefetch: blocks.iter().filter(|b| b.len() > 0).count() <= PREFETCH_MAX_BLOCKS,
    };
    // Blocks share key tiles in groups only where K/V outgrow the cache: with them in L2, the
    // group's accumulators (8 × 4 rows × d f32) crowd L1 instead, and 1K-token prefills ran
    // 5-7% slower grouped, where 16K ran 13% faster (`bench`, alternating binaries).
    let group = if std::mem::size_of_val(k) + std::mem::size_of_val(v) > GROUP_MIN_KV_BYTES {
        GROUP_BLOCKS
    } else {
        1
    };
    match force.unwrap_or_else(|| choose_plan(&blocks, d)) {
        Plan::Serial => {
            for g in blocks.chunks(group) {
                run_group(&ctx, g, &mut out[group_rows(g, d)]);
            }
        }
        Plan::Rows => {
            let mut jobs = Vec::with_capacity(blocks.len().div_ceil(group));
            let mut rest = out;
            for g in blocks.chunks(group) {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(group_rows(g, d).len());
                jobs.push((g, head));
                rest = tail;
            }
            jobs.into_par_iter()
                .for_each(|(g, o)| run_group(&ctx, g, o));
        }
        Plan::Split(chunks) => split_k(&ctx, &blocks, chunks.max(1), out),
    }
}

/// Greedily groups consecutive rows (≤ MAX_ROWS) while the union of their
/// ranges stays within one tile of the longest one, so shared K/V loads are
/// not wasted on keys only one row needs (e.g. across a head boundary).
fn build_blocks(ranges: &[(usize, usize)]) -> Vec<Block> {
    let mut blocks = Vec::with_capacity(ranges.len().div_ceil(MAX_ROWS));
    let mut i = 0;
    while i < ranges.len() {
        let (lo, hi) = ranges[i];
        let mut b = Block {
            r0: i,
            n: 1,
            lo,
            hi,
        };
        let mut longest = hi - lo;
        while b.n < MAX_ROWS && i + b.n < ranges.len() {
            let (lo, hi) = ranges[i + b.n];
            if lo < hi && b.lo < b.hi {
                let (ulo, uhi) = (b.lo.min(lo), b.hi.max(hi));
                let longest2 = longest.max(hi - lo);
                if uhi - ulo > longest2 + TILE {
                    break;
                }
                (b.lo, b.hi, longest) = (ulo, uhi, longest2);
            } else if lo < hi {
                (b.lo, b.hi, longest) = (lo, hi, hi - lo);
            }
            b.n += 1;
        }
        i += b.n;
        blocks.push(b);
    }
    blocks
}

fn choose_plan(blocks: &[Block], d: usize) -> Plan {
    let work: usize = blocks.iter().map(|b| b.n * b.len() * d).sum();
    let threads = rayon::current_num_threads();
    if threads <= 1 || work < PAR_MIN_WORK {
        return Plan::Serial;
    }
    let active = blocks.iter().filter(|b| b.len() > 0).count().max(1);
    if active >= 2 * threads {
        return Plan::Rows;
    }
    let longest = blocks.iter().map(Block::len).max().unwrap_or(0);
    let chunks = (2 * threads).div_ceil(active).min(longest / SPLIT_MIN_KEYS);
    if chunks <= 1 {
        Plan::Rows
    } else {
        Plan::Split(chunks)
    }
}

/// The output rows of consecutive blocks `g` (blocks cover the rows in order, without gaps).
fn group_rows(g: &[Block], d: usize) -> std::ops::Range<usize> {
    let last = g.last().expect("a group has a block");
    g[0].r0 * d..(last.r0 + last.n) * d
}

/// Consecutive blocks `g` on one thread, accumulating directly in their output rows `out`.
/// The blocks take their key tiles in turns (each block's tiles are the ones it would visit
/// alone, in the same order, so its result is unchanged): consecutive query rows see nearly
/// the same keys, so a tile of K/V is read from memory once for the whole group and from
/// cache by the others. Block by block, every block streamed its whole range — a global
/// layer's K/V at 16K (8 MiB in f16) is four times this machine's L2.
fn run_group<E: KvElem>(ctx: &Ctx<E>, g: &[Block], out: &mut [f32]) {
    debug_assert!(g.len() <= GROUP_BLOCKS);
    let d = ctx.d;
    out.fill(0.0);
    let base = g[0].r0;
    let mut st = [State::new(); GROUP_BLOCKS];
    let steps = g.iter().map(|b| b.len().div_ceil(TILE)).max().unwrap_or(0);
    for k in 0..steps {
        for (b, st) in g.iter().zip(st.iter_mut()) {
            let t0 = b.lo + k * TILE;
            if t0 < b.hi {
                let rows = (b.r0 - base) * d..(b.r0 - base + b.n) * d;
                process(ctx, b, t0, (t0 + TILE).min(b.hi), st, &mut out[rows]);
            }
        }
    }
    for (b, st) in g.iter().zip(&st) {
        finalize(
            ctx,
            b,
            &st.l,
            &mut out[(b.r0 - base) * d..(b.r0 - base + b.n) * d],
        );
    }
}

/// Split-K: partial states per (block, key chunk) in parallel, then merged
/// per block in chunk order (deterministic for a given thread count).
fn split_k<E: KvElem>(ctx: &Ctx<E>, blocks: &[Block], chunks: usize, out: &mut [f32]) {
    let mut jobs = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let per = b.len().div_ceil(chunks).next_multiple_of(TILE).max(TILE);
        let mut a = b.lo;
        while a < b.hi {
            jobs.push((bi, a, (a + per).min(b.hi)));
            a += per;
        }
    }
    let d = ctx.d;
    let parts: Vec<(usize, State, Vec<f32>)> = jobs
        .par_iter()
        .map(|&(bi, a, e)| {
            let b = &blocks[bi];
            let mut acc = vec![0.0; b.n * d];
            let mut st = State::new();
            process(ctx, b, a, e, &mut st, &mut acc);
            (bi, st, acc)
        })
        .collect();
    let mut p = 0;
    for (bi, b) in blocks.iter().enumerate() {
        let start = p;
        while p < parts.len() && parts[p].0 == bi {
            p += 1;
        }
        let parts = &parts[start..p];
        let o = &mut out[b.r0 * d..(b.r0 + b.n) * d];
        o.fill(0.0);
        let mut l = [0.0f32; MAX_ROWS];
        for r in 0..b.n {
            // Max ignoring NaN (as the tiles do); NaN still flows through l/acc.
            let m = parts.iter().fold(
                f32::NEG_INFINITY,
                |m, p| if p.1.m[r] > m { p.1.m[r] } else { m },
            );
            let orow = &mut o[r * d..(r + 1) * d];
            for (_, st, acc) in parts {
                // A chunk in which the row saw no key contributes nothing.
                if st.l[r] == 0.0 {
                    continue;
                }
                let w = ops::exp_s(st.m[r] - m);
                l[r] += w * st.l[r];
                for (o, &a) in orow.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                    *o += w * a;
                }
            }
        }
        finalize(ctx, b, &l, o);
    }
}

/// `acc / l` per row; rows with an empty range become zeros.
fn finalize<E>(ctx: &Ctx<E>, b: &Block, l: &[f32; MAX_ROWS], out: &mut [f32]) {
    for (r, row) in out.chunks_exact_mut(ctx.d).enumerate() {
        let (lo, hi) = ctx.ranges[b.r0 + r];
        if lo >= hi || l[r] == 0.0 {
            row.fill(0.0);
        } else {
            let inv = 1.0 / l[r];
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Online softmax over keys `a..e` for block `b`, continuing `st`/`acc`.
fn process<E: KvElem>(
    ctx: &Ctx<E>,
    b: &Block,
    a: usize,
    e: usize,
    st: &mut State,
    acc: &mut [f32],
) {
    let mut t0 = a;
    while t0 < e {
        let t1 = (t0 + TILE).min(e);
        let mut valid = [(0usize, 0usize); MAX_ROWS];
        let (mut jlo, mut jhi) = (usize::MAX, 0);
        for (r, vr) in valid.iter_mut().enumerate().take(b.n) {
            let (lo, hi) = ctx.ranges[b.r0 + r];
            let (vlo, vhi) = (lo.max(t0), hi.min(t1));
            if vlo < vhi {
                *vr = (vlo, vhi);
                (jlo, jhi) = (jlo.min(vlo), jhi.max(vhi));
            }
        }
        if jlo < jhi {
            tile(ctx, b, &valid, jlo, jhi, st, acc);
        }
        t0 = t1;
    }
}

/// One tile: logits for keys `jlo..jhi`, online-softmax update, `acc += p·V`.
fn tile<E: KvElem>(
    ctx: &Ctx<E>,
    b: &Block,
    valid: &[(usize, usize); MAX_ROWS],
    jlo: usize,
    jhi: usize,
    st: &mut State,
    acc: &mut [f32],
) {
    let (d, n, nj) = (ctx.d, b.n, jhi - jlo);
    let q = &ctx.q[b.r0 * d..(b.r0 + n) * d];
    let mut s = [[0.0f32; TILE]; MAX_ROWS];
    // Empty prefetch sources disable the hints.
    let (k_pf, v_pf): (&[E], &[E]) = if ctx.prefetch {
        (ctx.k, ctx.v)
    } else {
        (&[], &[])
    };
    qk(ctx.level, q, ctx.k, v_pf, d, n, jlo, jhi, &mut s);
    let mut alpha = [1.0f32; MAX_ROWS];
    for r in 0..n {
        let row = &mut s[r][..nj];
        let (vlo, vhi) = valid[r];
        if vlo >= vhi {
            // Row sees nothing here: p = 0, state unchanged (alpha = 1).
            row.fill(0.0);
            continue;
        }
        let (a, e) = (vlo - jlo, vhi - jlo);
        row[..a].fill(0.0);
        row[e..].fill(0.0);
        let x = &mut row[a..e];
        let scale = ctx.params.scale;
        x.iter_mut().for_each(|v| *v *= scale);
        if let Some(cap) = ctx.params.softcap {
            let inv = 1.0 / cap;
            x.iter_mut().for_each(|v| *v *= inv);
            ops::tanh_inplace_at(ctx.level, x);
            x.iter_mut().for_each(|v| *v *= cap);
        }
        // Max ignoring NaN; a NaN logit still poisons p, l and the output.
        let tmax = x
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let m_new = if tmax > st.m[r] { tmax } else { st.m[r] };
        alpha[r] = ops::exp_s(st.m[r] - m_new);
        x.iter_mut().for_each(|v| *v -= m_new);
        ops::exp_inplace_at(ctx.level, x);
        let sum: f32 = x.iter().sum();
        st.l[r] = st.l[r] * alpha[r] + sum;
        st.m[r] = m_new;
    }
    pv(ctx.level, &s, &alpha, valid, k_pf, ctx.v, d, n, jlo, acc);
}

/// `s[r][j - jlo] = q_r · k_j` for `j in jlo..jhi`. The AVX2 kernel also
/// prefetches the tile's rows of `v_pf` (V, or empty for none), which the PV
/// step reads column-strided.
#[allow(clippy::too_many_arguments)]
fn qk<E: KvElem>(
    level: SimdLevel,
    q: &[f32],
    k: &[E],
    v_pf: &[E],
    d: usize,
    n: usize,
    jlo: usize,
    jhi: usize,
    s: &mut [[f32; TILE]; MAX_ROWS],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was clamped to `simd::detected()`, so AVX2+FMA exist.
        SimdLevel::Avx2 => unsafe {
            match n {
                1 => avx2::qk::<1, 8, E>(q, k, v_pf, d, jlo, jhi, s),
                2 => avx2::qk::<2, 4, E>(q, k, v_pf, d, jlo, jhi, s),
                3 => avx2::qk::<3, 2, E>(q, k, v_pf, d, jlo, jhi, s),
                _ => avx2::qk::<4, 2, E>(q, k, v_pf, d, jlo, jhi, s),
            }
        },
        _ => {
            let _ = v_pf; // prefetch hints are AVX2-only
            for j in jlo..jhi {
                let kr = &k[j * d..(j + 1) * d];
                for (r, sr) in s.iter_mut().enumerate().take(n) {
                    sr[j - jlo] = dot_scalar(&q[r * d..(r + 1) * d], kr);
                }
            }
        }
    }
}

/// Dot product with 8 partial sums (vectorisable, close to the AVX2 order).
fn dot_scalar<E: KvElem>(a: &[f32], b: &[E]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y.to_f32())
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i].to_f32();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `acc_r ← alpha_r·acc_r + Σ_j p_rj·v_j` over each row's own valid keys.
///
/// Keys common to all rows go through the N-row kernel (one V load for all
/// rows); the ragged ends (boundary tiles only) are done row by row, so a row
/// never touches V rows outside its range (no `0·NaN` from keys it cannot see).
#[allow(clippy::too_many_arguments)]
fn pv<E: KvElem>(
    level: SimdLevel,
    s: &[[f32; TILE]; MAX_ROWS],
    alpha: &[f32; MAX_ROWS],
    valid: &[(usize, usize); MAX_ROWS],
    k_pf: &[E],
    v: &[E],
    d: usize,
    n: usize,
    base: usize,
    acc: &mut [f32],
) {
    let valid = &valid[..n];
    let all_active = valid.iter().all(|&(a, b)| a < b);
    let cl = valid.iter().map(|r| r.0).max().unwrap_or(0);
    let ch = valid.iter().map(|r| r.1).min().unwrap_or(0);
    if all_active && cl < ch {
        pv_kernel(
            level,
            &s[..n],
            &alpha[..n],
            k_pf,
            v,
            d,
            base,
            cl,
            ch,
            &mut acc[..n * d],
        );
        for (r, &(a, b)) in valid.iter().enumerate() {
            let row = &mut acc[r * d..(r + 1) * d];
            for (j0, j1) in [(a, cl), (ch, b)] {
                if j0 < j1 {
                    pv_kernel(level, &s[r..r + 1], &[1.0], k_pf, v, d, base, j0, j1, row);
                }
            }
        }
    } else {
        for (r, &(a, b)) in valid.iter().enumerate() {
            if a < b {
                let row = &mut acc[r * d..(r + 1) * d];
                pv_kernel(
                    level,
                    &s[r..r + 1],
                    &alpha[r..r + 1],
                    k_pf,
                    v,
                    d,
                    base,
                    a,
                    b,
                    row,
                );
            }
        }
    }
}

/// `acc_r ← alpha_r·acc_r + Σ_{j in j0..j1} s[r][j - base]·v_j` for the
/// `s.len()` rows of `acc`. The AVX2 kernel prefetches the next tile's rows
/// of `k_pf` (K, or empty for none).
#[allow(clippy::too_many_arguments)]
fn pv_kernel<E: KvElem>(
    level: SimdLevel,
    s: &[[f32; TILE]],
    alpha: &[f32],
    k_pf: &[E],
    v: &[E],
    d: usize,
    base: usize,
    j0: usize,
    j1: usize,
    acc: &mut [f32],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was clamped to `simd::detected()`, so AVX2+FMA exist.
        SimdLevel::Avx2 => unsafe {
            match s.len() {
                1 => avx2::pv::<1, 8, E>(s, alpha, k_pf, v, d, base, j0, j1, acc),
                2 => avx2::pv::<2, 4, E>(s, alpha, k_pf, v, d, base, j0, j1, acc),
                3 => avx2::pv::<3, 2, E>(s, alpha, k_pf, v, d, base, j0, j1, acc),
                _ => avx2::pv::<4, 2, E>(s, alpha, k_pf, v, d, base, j0, j1, acc),
            }
        },
        _ => {
            let _ = k_pf; // prefetch hints are AVX2-only
            for (r, ar) in acc.chunks_exact_mut(d).enumerate().take(s.len()) {
                ar.iter_mut().for_each(|x| *x *= alpha[r]);
                for j in j0..j1 {
                    let p = s[r][j - base];
                    for (x, &vv) in ar.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                        *x += p * vv.to_f32();
                    }
                }
            }
        }
    }
}

/// Prefill attention on AMX tiles (bf16).
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops over register arrays read clearer
mod avx2;

#[cfg(test)]
mod tests;
