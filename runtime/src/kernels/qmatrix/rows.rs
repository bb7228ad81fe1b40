//! Row-range kernels: `outs[i][r] = W[r]·x[i]` for a range of weight rows, dispatched to the
//! AVX2 or the scalar kernels of each format family.

use super::*;

// ---------------------------------------------------------------------------
// Row-range kernels (dispatch)
// ---------------------------------------------------------------------------

/// `outs[i][r] = W[r]·act[i]` for the rows in `w` (K-quants, 8-bit activations).
pub(super) fn int8_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &[ActRow; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        use BlockFormat::*;
        use avx2::*;
        // SAFETY: `level <= detected()` was asserted by the caller, so the CPU has
        // AVX2+FMA+F16C; `w` holds whole rows of `row_bytes` and each activation row has
        // cols/32 blocks, which is what the kernels index.
        unsafe {
            match format {
                Q4_K => int8_rows_avx2::<Q4_Kx, N>(w, row_bytes, acts, &mut outs),
                Q5_K => int8_rows_avx2::<Q5_Kx, N>(w, row_bytes, acts, &mut outs),
                Q6_K => int8_rows_avx2::<Q6_Kx, N>(w, row_bytes, acts, &mut outs),
                _ => unreachable!("not a K-quant"),
            }
        }
        return;
    }
    let _ = level;
    let dot: fn(&[u8], &ActRow) -> f32 = match format {
        BlockFormat::Q4_K => scalar::dot_q4_k,
        BlockFormat::Q5_K => scalar::dot_q5_k,
        BlockFormat::Q6_K => scalar::dot_q6_k,
        _ => unreachable!("not a K-quant"),
    };
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        for (out, a) in outs.iter_mut().zip(acts) {
            out[r] = dot(wr, a);
        }
    }
}

/// `outs[i][r] = W[r]·act[i]` for the rows in `w` (32-element formats, 16-bit activations).
pub(super) fn wide_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &[ActRow<'_, i16>; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        use BlockFormat::*;
        use avx2::*;
        // SAFETY: as in `int8_rows`.
        unsafe {
            match format {
                Q4_0 => int8_rows_avx2::<Q4_0x, N>(w, row_bytes, acts, &mut outs),
                Q4_1 => int8_rows_avx2::<Q4_1x, N>(w, row_bytes, acts, &mut outs),
                Q5_0 => int8_rows_avx2::<Q5_0x, N>(w, row_bytes, acts, &mut outs),
                Q5_1 => int8_rows_avx2::<Q5_1x, N>(w, row_bytes, acts, &mut outs),
                Q8_0 => int8_rows_avx2::<Q8_0x, N>(w, row_bytes, acts, &mut outs),
                _ => unreachable!("not a 32-element format"),
            }
        }
        return;
    }
    let _ = level;
    let dot: fn(&[u8], &ActRow<i16>) -> f32 = match format {
        BlockFormat::Q4_0 => scalar::dot_q4_0,
        BlockFormat::Q4_1 => scalar::dot_q4_1,
        BlockFormat::Q5_0 => scalar::dot_q5_0,
        BlockFormat::Q5_1 => scalar::dot_q5_1,
        BlockFormat::Q8_0 => scalar::dot_q8_0,
        _ => unreachable!("not a 32-element format"),
    };
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        for (out, a) in outs.iter_mut().zip(acts) {
            out[r] = dot(wr, a);
        }
    }
}

/// `outs[i][r] = W[r]·x[i]` in f32 for the rows in `w` (float formats and the generic
/// decode-a-block path).
pub(super) fn float_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    xs: &[&[f32]; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        // SAFETY: `level <= detected()` was asserted by the caller; `w` holds whole rows of
        // `row_bytes` = cols elements of `format`, and every `xs[i]` has cols values.
        unsafe { avx2::float_rows(format, w, row_bytes, xs, &mut outs) };
        return;
    }
    let _ = level;
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        match format {
            BlockFormat::F32 | BlockFormat::F16 | BlockFormat::BF16 => {
                for (out, x) in outs.iter_mut().zip(xs) {
                    out[r] = scalar::dot_float(format, wr, x);
                }
            }
            _ => {
                let mut acc = [0.0f32; N];
                let mut buf = [0.0f32; 256];
                let (bl, bb) = (format.block_len(), format.block_bytes());
                for (k, b) in wr.chunks_exact(bb).enumerate() {
                    format.dequantize(b, &mut buf[..bl]);
                    for (acc, x) in acc.iter_mut().zip(xs) {
                        *acc += scalar::dot_f32(&buf[..bl], &x[k * bl..(k + 1) * bl]);
                    }
                }
                for (out, acc) in outs.iter_mut().zip(acc) {
                    out[r] = acc;
                }
            }
        }
    }
}
