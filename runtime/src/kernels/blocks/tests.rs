use super::*;

// ----- helpers ---------------------------------------------------------

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

use crate::kernels::test_rng::Rng;

fn deq(ty: BlockFormat, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.block_bytes() * ty.block_len();
    let mut out = vec![123.0; n];
    ty.dequantize(bytes, &mut out);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ----- per-type block decoding -------------------------------------------

#[test]
fn dequant_plain_types() {
    assert_eq!(
        deq(BlockFormat::F32, &f32_bytes(&[1.25, -3.0])),
        [1.25, -3.0]
    );
    let f16s: Vec<u8> = [0x3C00u16, 0xC000, 0x3555, 0x7C00]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let v = deq(BlockFormat::F16, &f16s);
    // 0x3C00 = 1.0, 0xC000 = -2.0, 0x7C00 = +inf;
    // 0x3555: exponent 0b01101 = 13 -> 2^(13-15) = 0.25, mantissa 0x155 = 341
    //         -> (1 + 341/1024) * 0.25 = 0.333251953125
    assert_eq!(v, [1.0, -2.0, (1.0 + 341.0 / 1024.0) * 0.25, f32::INFINITY]);
    // bf16 0x4049 -> f32 bits 0x40490000 = 3.140625
    assert_eq!(deq(BlockFormat::BF16, &[0x49, 0x40]), [3.140625]);
}
#[test]
fn dequant_q8_0() {
    let mut b = h(0.25).to_vec(); // d = 0.25
    b.extend((0..32).map(|j| (j as i8 * 4 - 64) as u8));
    let v = deq(BlockFormat::Q8_0, &b);
    // j=0: q=-64 -> -16.0 ; j=31: q=60 -> 15.0
    assert_eq!((v[0], v[31]), (-16.0, 15.0));
    for j in 0..32 {
        assert_eq!(v[j], (j as f32 * 4.0 - 64.0) * 0.25, "j={j}");
    }
}

#[test]
fn dequant_q4_0() {
    let mut rng = Rng(1);
    let qs = rng.bytes(16);
    let mut b = h(0.5).to_vec();
    b.extend_from_slice(&qs);
    b[2] = 0x1F; // element 0 = (0xF - 8) * 0.5 = 3.5, element 16 = (0x1 - 8) * 0.5 = -3.5
    let v = deq(BlockFormat::Q4_0, &b);
    assert_eq!((v[0], v[16]), (3.5, -3.5));
    for i in 0..32 {
        let byte = b[2 + i % 16];
        let q = if i < 16 { byte & 15 } else { byte >> 4 };
        assert_eq!(v[i], (q as f32 - 8.0) * 0.5, "i={i}");
    }
}

#[test]
fn dequant_q4_1() {
    let mut rng = Rng(2);
    let mut b = [h(1.5), h(-2.0)].concat(); // d = 1.5, m = -2
    b.extend(rng.bytes(16));
    b[4] = 0xA3; // element 0: 3*1.5 - 2 = 2.5 ; element 16: 10*1.5 - 2 = 13.0
    let v = deq(BlockFormat::Q4_1, &b);
    assert_eq!((v[0], v[16]), (2.5, 13.0));
    for i in 0..32 {
        let byte = b[4 + i % 16];
        let q = if i < 16 { byte & 15 } else { byte >> 4 };
        assert_eq!(v[i], q as f32 * 1.5 - 2.0, "i={i}");
    }
}

#[test]
fn dequant_q5_0() {
    let mut rng = Rng(3);
    // qh bit i is the 5th bit of element i.
    let qh: u32 = 0x8001_0002;
    let mut b = h(0.25).to_vec();
    b.extend_from_slice(&qh.to_le_bytes());
    b.extend(rng.bytes(16));
    b[6] = 0x0F; // element 0: q=0xF, bit0=0 -> (15-16)*0.25 = -0.25 ; element 16: q=0, bit16=1 -> (16-16)*0.25 = 0
    b[7] = 0xF0; // element 1: q=0, bit1=1 -> 0 ; element 17: q=0xF, bit17=0 -> -0.25
    let v = deq(BlockFormat::Q5_0, &b);
    assert_eq!((v[0], v[16], v[1], v[17]), (-0.25, 0.0, 0.0, -0.25));
    // element 31: bit31 = 1 so q = (hi nibble of b[6+15]) + 16
    for i in 0..32 {
        let byte = b[6 + i % 16];
        let low = if i < 16 { byte & 15 } else { byte >> 4 };
        let q = low as u32 + 16 * ((qh >> i) & 1);
        assert_eq!(v[i], (q as f32 - 16.0) * 0.25, "i={i}");
    }
}

#[test]
fn dequant_q5_1() {
    let mut rng = Rng(4);
    let qh: u32 = rng.next() as u32;
    let mut b = [h(0.5), h(1.0)].concat(); // d = 0.5, m = 1
    b.extend_from_slice(&qh.to_le_bytes());
    b.extend(rng.bytes(16));
    let v = deq(BlockFormat::Q5_1, &b);
    for i in 0..32 {
        let byte = b[8 + i % 16];
        let low = if i < 16 { byte & 15 } else { byte >> 4 };
        let q = low as u32 + 16 * ((qh >> i) & 1);
        assert_eq!(v[i], q as f32 * 0.5 + 1.0, "i={i}");
    }
    // max possible value: q = 31 -> 31*0.5+1 = 16.5
    assert!(v.iter().all(|&x| (1.0..=16.5).contains(&x)));
}

// K-quant tests: pick logical values (quants, sub-block scales, mins)
// at random, *encode* them following the documented bit layout
// element-by-element, decode with the module and compare against the
// straightforward formula. d/dmin are powers of two so every product
// is exact and equality is exact.

/// Encode 8 (scale, min) 6-bit pairs into Q4_K/Q5_K's 12 bytes:
/// bytes 0..4 = scale[0..4] | (scale[4..8] >> 4) << 6,
/// bytes 4..8 = min[0..4]   | (min[4..8] >> 4) << 6,
/// bytes 8..12 = (scale[4..8] & 15) | (min[4..8] & 15) << 4.
fn pack_k4_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for i in 0..4 {
        out[i] = sc[i] | ((sc[i + 4] >> 4) << 6);
        out[i + 4] = mn[i] | ((mn[i + 4] >> 4) << 6);
        out[i + 8] = (sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4);
    }
    out
}

#[test]
fn dequant_q2_k() {
    let mut rng = Rng(5);
    let (d, dmin) = (0.5f32, 0.25f32);
    let q: Vec<u8> = (0..256).map(|_| rng.below(4) as u8).collect();
    let sc: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
    let mn: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
    let mut b = vec![0u8; 84];
    for s in 0..16 {
        b[s] = sc[s] | (mn[s] << 4);
    }
    // Element i: half n = i/128, shift pair j = (i%128)/32, l = i%32
    // -> qs[32n + l] bits 2j..2j+2; sub-block = i/16.
    for i in 0..256 {
        let (n, j, l) = (i / 128, (i % 128) / 32, i % 32);
        b[16 + 32 * n + l] |= q[i] << (2 * j);
    }
    b[80..82].copy_from_slice(&h(d));
    b[82..84].copy_from_slice(&h(dmin));
    let v = deq(BlockFormat::Q2_K, &b);
    for i in 0..256 {
        let s = i / 16;
        let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
        assert_eq!(v[i], want, "i={i}");
    }
    // Hand check: element 0 uses scale byte 0 = sc0 | mn0<<4.
    b[0] = 0x3A; // scale 10, min 3
    b[16] = (b[16] & !3) | 2; // q = 2
    // y0 = 0.5*10*2 - 0.25*3 = 9.25
    assert_eq!(deq(BlockFormat::Q2_K, &b)[0], 9.25);
}

#[test]
fn dequant_q3_k() {
    let mut rng = Rng(6);
    let d = 0.125f32;
    // 3-bit signed quants in -4..=3 and 6-bit scales stored with +32 bias.
    let q: Vec<i32> = (0..256).map(|_| rng.below(8) as i32 - 4).collect();
    let sc: Vec<u8> = (0..16).map(|_| rng.below(64) as u8).collect();
    let mut b = vec![0u8; 110];
    for i in 0..256 {
        let (n, j, l) = (i / 128, (i % 128) / 32, i % 32);
        // q = low2 - (hbit ? 0 : 4)  <=>  low2 = q & 3, hbit = q >= 0
        let low2 = (q[i] & 3) as u8;
        b[32 + 32 * n + l] |= low2 << (2 * j);
        if q[i] >= 0 {
            b[l] |= 1 << (4 * n + j); // hmask[l], bit per (half, shift)
        }
    }
    // Scale s: low 4 bits -> byte s%8 nibble s/8; high 2 bits -> byte 8+s%4 bits 2*(s/4).
    for s in 0..16 {
        b[96 + s % 8] |= (sc[s] & 15) << (4 * (s / 8));
        b[96 + 8 + s % 4] |= (sc[s] >> 4) << (2 * (s / 4));
    }
    b[108..110].copy_from_slice(&h(d));
    let v = deq(BlockFormat::Q3_K, &b);
    for i in 0..256 {
        let want = d * (sc[i / 16] as f32 - 32.0) * q[i] as f32;
        assert_eq!(v[i], want, "i={i}");
    }
    // Hand check of element 0: force scale 0 = 40 (8 after bias), q0 = -3.
    for s in [96usize, 104] {
        b[s] &= if s == 96 { 0xF0 } else { 0xFC };
    }
    b[96] |= 40 & 15; // low nibble 8
    b[104] |= 40 >> 4; // high bits 2 -> 0b10_1000 = 40
    b[32] = (b[32] & !3) | 1; // low2 = 1
    b[0] &= !1; // hbit clear -> subtract 4: q = 1 - 4 = -3
    // y0 = 0.125 * (40 - 32) * -3 = -3.0
    assert_eq!(deq(BlockFormat::Q3_K, &b)[0], -3.0);
}

fn k4_logical(rng: &mut Rng, qmax: u64) -> (Vec<u8>, [u8; 8], [u8; 8]) {
    let q: Vec<u8> = (0..256).map(|_| rng.below(qmax) as u8).collect();
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..8 {
        sc[i] = rng.below(64) as u8;
        mn[i] = rng.below(64) as u8;
    }
    (q, sc, mn)
}

#[test]
fn dequant_q4_k() {
    let mut rng = Rng(7);
    let (d, dmin) = (0.25f32, 0.5f32);
    let (q, sc, mn) = k4_logical(&mut rng, 16);
    let mut b = vec![0u8; 144];
    b[0..2].copy_from_slice(&h(d));
    b[2..4].copy_from_slice(&h(dmin));
    b[4..16].copy_from_slice(&pack_k4_scales(&sc, &mn));
    // Element i: group g = i/64; first 32 of a group in low nibbles of
    // qs[32g..32g+32], next 32 in the high nibbles.
    for i in 0..256 {
        let (g, hi, l) = (i / 64, (i % 64) / 32, i % 32);
        b[16 + 32 * g + l] |= q[i] << (4 * hi);
    }
    let v = deq(BlockFormat::Q4_K, &b);
    for i in 0..256 {
        let s = i / 32;
        let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
        assert_eq!(v[i], want, "i={i}");
    }
    // Hand check: sub-block 5 (scale/min from the packed high part).
    // Element 160 = group 2, high nibble of qs[64]. Set sc5=33, mn5=17, q=7:
    // y = 0.25*33*7 - 0.5*17 = 57.75 - 8.5 = 49.25
    let (mut sc2, mut mn2) = (sc, mn);
    sc2[5] = 33;
    mn2[5] = 17;
    b[4..16].copy_from_slice(&pack_k4_scales(&sc2, &mn2));
    b[16 + 64] = (b[16 + 64] & 0x0F) | (7 << 4);
    assert_eq!(deq(BlockFormat::Q4_K, &b)[160], 49.25);
}

#[test]
fn dequant_q5_k() {
    let mut rng = Rng(8);
    let (d, dmin) = (0.5f32, 0.125f32);
    let (q, sc, mn) = k4_logical(&mut rng, 32);
    let mut b = vec![0u8; 176];
    b[0..2].copy_from_slice(&h(d));
    b[2..4].copy_from_slice(&h(dmin));
    b[4..16].copy_from_slice(&pack_k4_scales(&sc, &mn));
    // Like Q4_K, plus bit 4 of element i in qh[l] at bit (i/32) (= sub-block index).
    for i in 0..256 {
        let (g, hi, l) = (i / 64, (i % 64) / 32, i % 32);
        b[48 + 32 * g + l] |= (q[i] & 15) << (4 * hi);
        b[16 + l] |= (q[i] >> 4) << (i / 32);
    }
    let v = deq(BlockFormat::Q5_K, &b);
    for i in 0..256 {
        let s = i / 32;
        let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
        assert_eq!(v[i], want, "i={i}");
    }
    // Hand check element 255: sub-block 7, qh[31] bit 7, high nibble of qs[127].
    // With sc7=2, mn7=8, q=31: y = 0.5*2*31 - 0.125*8 = 30
    let (mut sc2, mut mn2) = (sc, mn);
    sc2[7] = 2;
    mn2[7] = 8;
    b[4..16].copy_from_slice(&pack_k4_scales(&sc2, &mn2));
    b[48 + 127] |= 0xF0;
    b[16 + 31] |= 0x80;
    assert_eq!(deq(BlockFormat::Q5_K, &b)[255], 30.0);
}

#[test]
fn dequant_q6_k() {
    let mut rng = Rng(9);
    let d = 0.25f32;
    let q: Vec<i32> = (0..256).map(|_| rng.below(64) as i32).collect(); // stored 0..63, value q-32
    let sc: Vec<i8> = (0..16).map(|_| rng.next() as i8).collect();
    let mut b = vec![0u8; 210];
    // Element i: half n = i/128, quarter k = (i%128)/32, l = i%32.
    // Low 4 bits -> ql[64n + l + 32*(k&1)], nibble k>>1.
    // High 2 bits -> qh[32n + l] bits 2k..2k+2. Scale = sc[i/16].
    for i in 0..256 {
        let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let qi = q[i] as u8;
        b[64 * n + l + 32 * (k & 1)] |= (qi & 15) << (4 * (k >> 1));
        b[128 + 32 * n + l] |= (qi >> 4) << (2 * k);
    }
    for s in 0..16 {
        b[192 + s] = sc[s] as u8;
    }
    b[208..210].copy_from_slice(&h(d));
    let v = deq(BlockFormat::Q6_K, &b);
    for i in 0..256 {
        let want = d * sc[i / 16] as f32 * (q[i] - 32) as f32;
        assert_eq!(v[i], want, "i={i}");
    }
    // Hand check element 64 (half 0, quarter 2 -> high nibble of ql[0],
    // qh[0] bits 4..6, scale index 4): ql[0]=0x50, qh[0]=0b0010_0000, sc[4]=-3
    // q = 5 | (2<<4) = 37 -> 37-32 = 5; y = 0.25 * -3 * 5 = -3.75
    b[0] = 0x50;
    b[128] = 0b0010_0000;
    b[192 + 4] = (-3i8) as u8;
    assert_eq!(deq(BlockFormat::Q6_K, &b)[64], -3.75);
}

#[test]
fn dequant_q8_k() {
    let mut b = 0.5f32.to_le_bytes().to_vec();
    b.extend((0..256).map(|j| (j as u8).wrapping_sub(128)));
    b.extend([0u8; 32]);
    let v = deq(BlockFormat::Q8_K, &b);
    // j=0: byte 0x80 = -128 -> -64.0 ; j=255: byte 127 -> 63.5
    assert_eq!((v[0], v[255]), (-64.0, 63.5));
    for j in 0..256 {
        assert_eq!(v[j], (j as f32 - 128.0) * 0.5);
    }
}

#[test]
fn dequant_multiple_blocks_are_independent() {
    // Two Q4_K blocks: the second must not reuse the first block's d.
    let mut rng = Rng(10);
    let mut b = rng.bytes(288);
    b[0..2].copy_from_slice(&h(1.0));
    b[144..146].copy_from_slice(&h(2.0));
    b[2..4].copy_from_slice(&h(0.0));
    b[146..148].copy_from_slice(&h(0.0));
    b.copy_within(4..144, 148); // same scales and quants, only d differs
    let v = deq(BlockFormat::Q4_K, &b);
    for i in 0..256 {
        assert_eq!(v[256 + i], 2.0 * v[i], "i={i}");
    }
}

#[test]
#[should_panic(expected = "cannot decode")]
fn dequant_rejects_short_input() {
    BlockFormat::Q4_K.dequantize(&[0; 143], &mut [0.0; 256]);
}

#[test]
#[should_panic(expected = "cannot decode")]
fn dequant_rejects_partial_block() {
    BlockFormat::Q8_0.dequantize(&[0; 34], &mut [0.0; 33]);
}

#[test]
fn dequant_empty_is_fine() {
    BlockFormat::Q6_K.dequantize(&[], &mut []);
}

#[test]
fn format_table() {
    for f in BlockFormat::ALL {
        assert!(f.block_len() > 0 && f.block_bytes() > 0);
        assert_eq!(f.row_bytes(0), Some(0));
        assert_eq!(f.row_bytes(3 * f.block_len()), Some(3 * f.block_bytes()));
        if f.block_len() > 1 {
            assert_eq!(f.row_bytes(f.block_len() + 1), None, "{f}");
        }
        assert_eq!(f.name(), f.name().to_lowercase());
    }
    assert_eq!(BlockFormat::Q6_K.row_bytes(512), Some(420));
    assert_eq!(BlockFormat::Q6_K.row_bytes(100), None);
    assert_eq!(BlockFormat::F16.row_bytes(7), Some(14));
    assert_eq!(BlockFormat::Q4_K.name(), "q4_k");
    assert_eq!(BlockFormat::F32.row_bytes(usize::MAX), None);
}

#[test]
fn k4_scales_mins_matches_scale_min_k4() {
    let mut rng = Rng(11);
    for _ in 0..200 {
        let q: [u8; 12] = rng.bytes(12).try_into().unwrap();
        let (sc, mn) = k4_scales_mins(&q);
        for j in 0..8 {
            assert_eq!((sc[j], mn[j]), scale_min_k4(j, &q), "j={j} q={q:?}");
        }
    }
}

// ----- encoders ------------------------------------------------------------

#[test]
fn quantize_q8_0_follows_ggml() {
    let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    x[40..].iter_mut().for_each(|v| *v = 0.0); // an all-zero block stays zero
    x[32] = 0.0;
    let b = quantize(BlockFormat::Q8_0, &x[..32]).unwrap();
    assert_eq!(b.len(), 34);
    let amax = 20.0 * 0.37f32; // |x[0]|
    let d = amax / 127.0;
    assert_eq!(b[0..2], h(d));
    for j in 0..32 {
        assert_eq!(b[2 + j] as i8, (x[j] / d).round() as i8, "j={j}");
    }
    assert_eq!(b[2] as i8, -127);
    // round trip within half a step (plus the f16 rounding of d)
    let y = deq(BlockFormat::Q8_0, &b);
    let dd = f16(b[0], b[1]);
    for j in 0..32 {
        assert!(
            (y[j] - x[j]).abs() <= 0.5 * dd + 127.0 * (dd - d).abs() + 1e-6,
            "j={j}"
        );
    }
    let zero = quantize(BlockFormat::Q8_0, &[0.0; 32]).unwrap();
    assert!(zero.iter().all(|&v| v == 0));
}

#[test]
fn quantize_floats_round_trip() {
    let x = [1.0f32, -2.5, 3.140625, 1e-3, 65504.0, -0.0];
    assert_eq!(
        deq(BlockFormat::F32, &quantize(BlockFormat::F32, &x).unwrap()),
        x
    );
    let y = deq(BlockFormat::F16, &quantize(BlockFormat::F16, &x).unwrap());
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= a.abs() * 1e-3, "{a} {b}");
    }
    let y = deq(BlockFormat::BF16, &quantize(BlockFormat::BF16, &x).unwrap());
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= a.abs() * 4e-3, "{a} {b}");
    }
    // bf16 rounds to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1.
    let tie = 1.0 + 2f32.powi(-8);
    assert_eq!(
        deq(
            BlockFormat::BF16,
            &quantize(BlockFormat::BF16, &[tie]).unwrap()
        ),
        [1.0]
    );
    let above = 1.0 + 2f32.powi(-8) + 2f32.powi(-20);
    assert_eq!(
        deq(
            BlockFormat::BF16,
            &quantize(BlockFormat::BF16, &[above]).unwrap()
        ),
        [1.0 + 2f32.powi(-7)]
    );
}

#[test]
fn quantize_rejects_other_targets_and_partial_blocks() {
    assert!(quantize(BlockFormat::Q4_K, &[0.0; 256]).is_none());
    assert!(quantize(BlockFormat::Q5_0, &[0.0; 32]).is_none());
    assert!(quantize(BlockFormat::Q8_0, &[0.0; 31]).is_none());
}
