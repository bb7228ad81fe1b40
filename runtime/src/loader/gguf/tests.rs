//! Unit tests of the GGUF reader: hand-built files (valid, truncated, corrupt) and every block
//! format's decoder against values computed by hand.

// Index loops mirror the documented per-element layout arithmetic.
#![allow(clippy::needless_range_loop)]

use super::*;

// ----- helpers ---------------------------------------------------------

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

use crate::kernels::test_rng::Rng;

fn deq(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![123.0; 3]; // stale content must be discarded
    dequantize(ty, bytes, n, &mut out).unwrap();
    assert_eq!(out.len(), n);
    out
}

/// Minimal GGUF writer used to build test files.
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    /// Overrides the computed (aligned, sequential) offset.
    offset: Option<u64>,
}

struct Builder {
    version: u32,
    alignment: u64,
    kvs: Vec<(String, MetaValue)>,
    tensors: Vec<TensorSpec>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }
    fn kv(mut self, k: &str, v: MetaValue) -> Self {
        self.kvs.push((k.to_string(), v));
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id: ty.id(),
            data,
            offset: None,
        });
        self
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => out.push(*x),
            MetaValue::I8(x) => out.push(*x as u8),
            MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::Bool(x) => out.push(*x as u8),
            MetaValue::String(s) => Self::put_str(out, s),
            MetaValue::Array(items) => {
                let elem = items.first().map_or(0, MetaValue::type_id);
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    Self::put_value(out, it);
                }
            }
            MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }

    /// Serialize. No padding after the last tensor, so cutting even the
    /// final byte makes the file invalid (the truncation test relies on it).
    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            Self::put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            Self::put_value(&mut out, v);
        }
        // Data is always laid out sequentially; `offset` overrides only
        // what the header claims (so absurd offsets cost no memory).
        let mut next = 0u64;
        let mut positions = Vec::new();
        for t in &self.tensors {
            Self::put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(next).to_le_bytes());
            positions.push(next);
            next = (next + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        let data_start = (out.len() as u64).next_multiple_of(self.alignment) as usize;
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(positions) {
            let at = data_start + off as usize;
            if out.len() < at + t.data.len() {
                out.resize(at + t.data.len(), 0);
            }
            out[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        out
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Valid file with every metadata type and several tensor types.
fn sample_builder() -> Builder {
    let s = |x: &str| MetaValue::String(x.to_string());
    let mut q8 = Vec::new();
    for blk in 0..2 {
        q8.extend_from_slice(&h(0.5));
        q8.extend((0..32).map(|j| (j as i8 - 16 + blk) as u8));
    }
    Builder::new()
        .kv("general.architecture", s("gemma3"))
        .kv("t.u8", MetaValue::U8(200))
        .kv("t.i8", MetaValue::I8(-5))
        .kv("t.u16", MetaValue::U16(60000))
        .kv("t.i16", MetaValue::I16(-30000))
        .kv("t.u32", MetaValue::U32(4_000_000_000))
        .kv("t.i32", MetaValue::I32(-2_000_000_000))
        .kv("t.f32", MetaValue::F32(1.5))
        .kv("t.bool", MetaValue::Bool(true))
        .kv("t.u64", MetaValue::U64(u64::MAX))
        .kv("t.i64", MetaValue::I64(i64::MIN))
        .kv("t.f64", MetaValue::F64(-0.125))
        .kv("t.utf8", s("héllo ▁wörld"))
        .kv("t.empty", MetaValue::Array(vec![]))
        .kv(
            "t.tokens",
            MetaValue::Array(vec![s("<pad>"), s("<eos>"), s("▁the")]),
        )
        .kv(
            "t.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)]),
                MetaValue::Array(vec![MetaValue::I32(3)]),
            ]),
        )
        .tensor(
            "w.f32",
            &[3, 2],
            GgmlType::F32,
            f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
        )
        .tensor(
            "w.f16",
            &[4],
            GgmlType::F16,
            [1.0f32, -2.0, 0.5, 65504.0]
                .iter()
                .flat_map(|&x| h(x))
                .collect(),
        )
        .tensor("w.q8", &[32, 2], GgmlType::Q8_0, q8)
        .tensor(
            "w.bf16",
            &[2, 1, 1],
            GgmlType::BF16,
            // bf16 bits: 0x3FC0 = 1.5, 0xC100 = -8.0
            vec![0xC0, 0x3F, 0x00, 0xC1],
        )
}

// ----- round trip -------------------------------------------------------

#[test]
fn round_trip_metadata_and_tensors() {
    let b = sample_builder();
    let g = GgufFile::from_bytes(b.build()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset() % 32, 0);
    assert_eq!(g.metadata().len(), b.kvs.len());
    for (k, v) in &b.kvs {
        assert_eq!(g.meta(k), Some(v), "key {k}");
    }
    assert_eq!(
        g.meta("general.architecture").and_then(MetaValue::as_str),
        Some("gemma3")
    );
    assert_eq!(
        g.meta("t.u32").and_then(MetaValue::as_u64),
        Some(4_000_000_000)
    );
    assert_eq!(g.meta("t.i8").and_then(MetaValue::as_u64), None);
    assert_eq!(g.meta("t.i8").and_then(MetaValue::as_i64), Some(-5));
    assert_eq!(g.meta("t.i8").and_then(MetaValue::as_f64), Some(-5.0));
    assert_eq!(g.meta("t.f32").and_then(MetaValue::as_f64), Some(1.5));
    assert_eq!(g.meta("t.bool").and_then(MetaValue::as_bool), Some(true));
    assert_eq!(
        g.meta("t.tokens")
            .and_then(MetaValue::as_array)
            .map(<[_]>::len),
        Some(3)
    );
    assert_eq!(g.meta_u64("t.u16").unwrap(), 60000);
    assert_eq!(g.meta_str("t.utf8").unwrap(), "héllo ▁wörld");
    let e = g.meta_u64("t.utf8").unwrap_err().to_string();
    assert!(
        e.contains("t.utf8") && e.contains("string") && e.contains("integer"),
        "{e}"
    );
    let e = g.meta_f64("nope").unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("nope"), "{e}");

    let names: Vec<_> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w.f32", "w.f16", "w.q8", "w.bf16"]);
    let t = g.tensor_info("w.f32").unwrap();
    assert_eq!(t.dims, [3, 2]);
    assert_eq!(t.shape(), [2, 3]);
    assert_eq!((t.n_elements(), t.n_bytes()), (6, 24));
    assert_eq!(g.tensor_bytes("w.f32").unwrap().len(), 24);

    let (v, shape) = g.tensor_f32("w.f32").unwrap();
    assert_eq!(shape, [2, 3]);
    assert_eq!(v, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let (v, shape) = g.tensor_f32("w.f16").unwrap();
    assert_eq!((v, shape), (vec![1.0, -2.0, 0.5, 65504.0], vec![4]));
    let (v, shape) = g.tensor_f32("w.bf16").unwrap();
    assert_eq!((v, shape), (vec![1.5, -8.0], vec![1, 1, 2]));

    let (v, shape) = g.tensor_f32("w.q8").unwrap();
    assert_eq!(shape, [2, 32]);
    // block 0, j=0: q = 0-16 = -16 -> -16 * 0.5 = -8; block 1, j=31: q = 31-16+1 = 16 -> 8
    assert_eq!((v[0], v[63]), (-8.0, 8.0));
    // Row access must agree with the full decode.
    assert_eq!(g.tensor_rows_f32("w.q8", 1..2).unwrap(), &v[32..64]);
    assert_eq!(
        g.tensor_rows_f32("w.f32", 0..2).unwrap(),
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert!(g.tensor_rows_f32("w.q8", 1..3).is_err());

    assert!(g.tensor_info("missing").is_none());
    let e = g.tensor_f32("missing").unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("<memory>"), "{e}");
    assert!(matches!(
        g.tensor_bytes("missing"),
        Err(GgufError::TensorNotFound { .. })
    ));
}

#[test]
fn custom_alignment_and_v2() {
    let mut b = sample_builder().kv("general.alignment", MetaValue::U32(64));
    b.alignment = 64;
    b.version = 2;
    let g = GgufFile::from_bytes(b.build()).unwrap();
    assert_eq!((g.version(), g.alignment()), (2, 64));
    assert_eq!(g.data_offset() % 64, 0);
    for t in g.tensors() {
        assert_eq!(t.offset % 64, 0);
    }
    assert_eq!(g.tensor_f32("w.f32").unwrap().0[5], 5.0);
}

#[test]
fn open_via_mmap() {
    let path = std::env::temp_dir().join(format!("gguf-test-{}.gguf", std::process::id()));
    std::fs::write(&path, sample_builder().build()).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.tensor_f32("w.f32").unwrap().0[4], 4.0);
    drop(g);
    std::fs::remove_file(&path).unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("gguf-test-"), "{e}");
}

// ----- per-type block decoding -------------------------------------------

#[test]
fn dequant_plain_types() {
    assert_eq!(deq(GgmlType::F32, &f32_bytes(&[1.25, -3.0])), [1.25, -3.0]);
    let f16s: Vec<u8> = [0x3C00u16, 0xC000, 0x3555, 0x7C00]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let v = deq(GgmlType::F16, &f16s);
    // 0x3C00 = 1.0, 0xC000 = -2.0, 0x7C00 = +inf;
    // 0x3555: exponent 0b01101 = 13 -> 2^(13-15) = 0.25, mantissa 0x155 = 341
    //         -> (1 + 341/1024) * 0.25 = 0.333251953125
    assert_eq!(v, [1.0, -2.0, (1.0 + 341.0 / 1024.0) * 0.25, f32::INFINITY]);
    // bf16 0x4049 -> f32 bits 0x40490000 = 3.140625
    assert_eq!(deq(GgmlType::BF16, &[0x49, 0x40]), [3.140625]);
    assert_eq!(deq(GgmlType::I8, &[0xFF, 7]), [-1.0, 7.0]);
    assert_eq!(deq(GgmlType::I16, &(-300i16).to_le_bytes()), [-300.0]);
    assert_eq!(deq(GgmlType::I32, &70000i32.to_le_bytes()), [70000.0]);
    assert_eq!(deq(GgmlType::I64, &(-9i64).to_le_bytes()), [-9.0]);
    assert_eq!(deq(GgmlType::F64, &0.75f64.to_le_bytes()), [0.75]);
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
    let v = deq(GgmlType::Q4_K, &b);
    for i in 0..256 {
        assert_eq!(v[256 + i], 2.0 * v[i], "i={i}");
    }
}

#[test]
fn dequant_rejects_bad_lengths_and_types() {
    let mut out = Vec::new();
    let e = dequantize(GgmlType::Q4_K, &[0; 144], 128, &mut out).unwrap_err();
    assert!(
        e.to_string().contains("multiple of the block size 256"),
        "{e}"
    );
    let e = dequantize(GgmlType::Q4_K, &[0; 143], 256, &mut out).unwrap_err();
    assert!(e.to_string().contains("144 bytes"), "{e}");
    let e = dequantize(GgmlType::Q8_0, &[0; 68], 32, &mut out).unwrap_err();
    assert!(matches!(e, GgufError::BadTensorData { .. }), "{e}");
    let e = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256, &mut out).unwrap_err();
    assert!(
        e.to_string().contains("unsupported tensor type IQ2_XXS"),
        "{e}"
    );
    let e = dequantize(GgmlType::Q8_1, &[0; 36], 32, &mut out).unwrap_err();
    assert!(matches!(e, GgufError::UnsupportedTensorType { .. }), "{e}");
    // Zero elements is fine and clears stale content.
    out.push(1.0);
    dequantize(GgmlType::Q6_K, &[], 0, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn type_table() {
    for id in 0..64 {
        if let Some(t) = GgmlType::from_id(id) {
            assert_eq!(t.id(), id);
            assert!(t.block_size() > 0 && t.type_size() > 0);
        }
    }
    for id in [4, 5, 31, 32, 33, 36, 1000] {
        assert!(GgmlType::from_id(id).is_none(), "{id}");
    }
    assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
    assert_eq!(GgmlType::Q6_K.bytes_for(100), None);
}

// ----- corruption --------------------------------------------------------

fn err_of(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_truncation_is_an_error() {
    let full = sample_builder().build();
    assert!(GgufFile::from_bytes(full.clone()).is_ok());
    for len in 0..full.len() {
        let r = GgufFile::from_bytes(full[..len].to_vec());
        assert!(
            r.is_err(),
            "truncation to {len} of {} bytes parsed",
            full.len()
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let full = sample_builder().build();
    let mut rng = Rng(42);
    let mut ok = 0;
    for _ in 0..3000 {
        let mut b = full.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] = match rng.below(3) {
                0 => rng.next() as u8,
                1 => 0xFF,
                _ => b[at] ^ (1 << rng.below(8)),
            };
        }
        if let Ok(g) = GgufFile::from_bytes(b) {
            ok += 1;
            for t in g.tensors() {
                let _ = g.tensor_f32(&t.name);
            }
        }
    }
    // Most flips land in tensor data or string bodies and stay valid.
    assert!(ok > 0);
}

#[test]
fn header_errors() {
    let e = err_of(b"GGML\x03\0\0\0".to_vec());
    assert!(e.contains("not a GGUF file") && e.contains("GGML"), "{e}");
    let e = err_of(b"PK".to_vec());
    assert!(e.contains("not a GGUF file"), "{e}");
    let e = err_of(b"GG".to_vec());
    assert!(e.contains("truncated") && e.contains("magic"), "{e}");

    let mut b = sample_builder();
    b.version = 1;
    let e = err_of(b.build());
    assert!(e.contains("version 1") && e.contains("obsolete"), "{e}");
    b.version = 4;
    assert!(err_of(b.build()).contains("expected 2 or 3"));
    b.version = 3u32.swap_bytes();
    assert!(err_of(b.build()).contains("big-endian"));
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(n_tensors.to_le_bytes());
    v.extend(n_kv.to_le_bytes());
    v
}

fn with_kv(key: &[u8], ty: u32, value: &[u8]) -> Vec<u8> {
    let mut v = header(0, 1);
    v.extend((key.len() as u64).to_le_bytes());
    v.extend_from_slice(key);
    v.extend(ty.to_le_bytes());
    v.extend_from_slice(value);
    v
}

#[test]
fn absurd_counts_and_lengths() {
    let e = err_of(header(u64::MAX, 0));
    assert!(
        e.contains("tensor count") && e.contains("implausibly"),
        "{e}"
    );
    let e = err_of(header(0, 1 << 40));
    assert!(e.contains("key/value count"), "{e}");
    // Key length far past EOF.
    let mut v = header(0, 1);
    v.extend(u64::MAX.to_le_bytes());
    v.extend([0u8; 16]); // enough bytes that the kv count itself is plausible
    let e = err_of(v);
    assert!(
        e.contains("key of metadata entry 0") && e.contains("truncated"),
        "{e}"
    );
    // String value length far past EOF.
    let e = err_of(with_kv(b"k.s", 8, &(1u64 << 50).to_le_bytes()));
    assert!(e.contains("'k.s'"), "{e}");
    // Array claiming 2^60 u32 elements.
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 60).to_le_bytes());
    let e = err_of(with_kv(b"k.arr", 9, &arr));
    assert!(e.contains("'k.arr'") && e.contains("implausibly"), "{e}");
    // Array claiming u64::MAX strings (overflow in count * min size).
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend(u64::MAX.to_le_bytes());
    assert!(err_of(with_kv(b"k.arr", 9, &arr)).contains("implausibly"));
    // Deeply nested arrays.
    let mut nest = Vec::new();
    for _ in 0..100 {
        nest.extend(9u32.to_le_bytes());
        nest.extend(1u64.to_le_bytes());
    }
    nest.extend(0u32.to_le_bytes());
    nest.extend(0u64.to_le_bytes());
    let e = err_of(with_kv(b"k.deep", 9, &nest));
    assert!(e.contains("nested") && e.contains("k.deep"), "{e}");
}

#[test]
fn bad_metadata() {
    let e = err_of(with_kv(b"k.x", 13, &[0; 8]));
    assert!(
        e.contains("k.x") && e.contains("unknown value type id 13"),
        "{e}"
    );
    let mut arr = 77u32.to_le_bytes().to_vec();
    arr.extend(0u64.to_le_bytes());
    assert!(err_of(with_kv(b"k.arr", 9, &arr)).contains("77"));
    // Non-UTF-8 key and value.
    assert!(err_of(with_kv(b"k\xFF", 0, &[1])).contains("not valid UTF-8"));
    let mut s = 2u64.to_le_bytes().to_vec();
    s.extend([0xC3, 0x28]);
    let e = err_of(with_kv(b"k.bad", 8, &s));
    assert!(e.contains("'k.bad'") && e.contains("UTF-8"), "{e}");
    // Duplicate key.
    let b = Builder::new()
        .kv("a", MetaValue::U8(1))
        .kv("a", MetaValue::U8(2));
    assert!(err_of(b.build()).contains("duplicate metadata key 'a'"));
    // Alignment must be a power-of-two u32.
    for bad in [MetaValue::U32(0), MetaValue::U32(24), MetaValue::U64(32)] {
        let e = err_of(sample_builder().kv("general.alignment", bad).build());
        assert!(e.contains("general.alignment"), "{e}");
    }
}

#[test]
fn bad_tensor_infos() {
    let q = |b: Builder| err_of(b.build());
    let one = |name: &str, dims: &[u64], ty: GgmlType, n: usize| {
        Builder::new().tensor(name, dims, ty, vec![0; n])
    };

    // Unknown ggml type id names the tensor.
    let mut b = one("blk.0.w", &[4], GgmlType::F32, 16);
    b.tensors[0].type_id = 99;
    let e = q(b);
    assert!(
        e.contains("'blk.0.w'") && e.contains("unknown ggml type id 99"),
        "{e}"
    );

    // Row length not a block multiple.
    let e = q(one("t.q", &[48, 2], GgmlType::Q8_0, 102));
    assert!(e.contains("'t.q'") && e.contains("block size 32"), "{e}");

    // Too many dims; element count overflow.
    let e = q(one("t.5d", &[1, 1, 1, 1, 1], GgmlType::F32, 4));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = q(one("t.big", &[1 << 32, 1 << 32], GgmlType::F32, 0));
    assert!(e.contains("'t.big'") && e.contains("overflow"), "{e}");

    // Misaligned offset.
    let mut b = one("t.mis", &[4], GgmlType::F32, 16);
    b.tensors[0].offset = Some(8);
    let e = q(b);
    assert!(
        e.contains("'t.mis'") && e.contains("multiple of the alignment 32"),
        "{e}"
    );

    // Offset far past the end.
    let mut b = one("t.far", &[4], GgmlType::F32, 16);
    b.tensors[0].offset = Some(1 << 40);
    let e = q(b);
    assert!(e.contains("'t.far'") && e.contains("past the end"), "{e}");
    let mut b = one("t.wrap", &[4], GgmlType::F32, 16);
    b.tensors[0].offset = Some(u64::MAX - 31);
    assert!(q(b).contains("'t.wrap'"));

    // Tensor bytes past EOF: declare 8 floats but write 4.
    let e = q(one("t.short", &[8], GgmlType::F32, 16));
    assert!(e.contains("'t.short'") && e.contains("32 bytes"), "{e}");

    // Data section past EOF: header (24) + info for "t.empty" (15 + 4 + 8 + 4 + 8)
    // ends at byte 63, so the data section would start at 64; cut the file at 63.
    let mut bytes = one("t.empty", &[4], GgmlType::F32, 16).build();
    assert_eq!(bytes.len(), 64 + 16);
    bytes.truncate(63);
    let e = err_of(bytes);
    assert!(
        e.contains("data section") && e.contains("starts at byte 64"),
        "{e}"
    );

    // Duplicate tensor names.
    let b = one("dup", &[4], GgmlType::F32, 16).tensor("dup", &[4], GgmlType::F32, vec![0; 16]);
    assert!(q(b).contains("duplicate tensor name 'dup'"));
}

#[test]
fn unsupported_type_parses_but_dequant_names_tensor() {
    let b = Builder::new().tensor("blk.0.iq", &[256], GgmlType::IQ2_XXS, vec![0; 66]);
    let g = GgufFile::from_bytes(b.build()).unwrap();
    assert_eq!(g.tensor_bytes("blk.0.iq").unwrap().len(), 66);
    let e = g.tensor_f32("blk.0.iq").unwrap_err().to_string();
    assert!(
        e.contains("'blk.0.iq'") && e.contains("unsupported tensor type IQ2_XXS"),
        "{e}"
    );
}

#[test]
fn empty_file_with_no_tensors_is_ok() {
    let g = GgufFile::from_bytes(header(0, 0)).unwrap();
    assert!(g.tensors().is_empty() && g.metadata().is_empty());
}

/// Like the fuzzer's `num_hidden_layers = 5000003` in a config.json: a corrupt layer count is
/// refused before per-layer tables are sized from it.
#[test]
fn absurd_block_count_is_refused_before_allocating() {
    let f = Builder::new()
        .kv(
            "general.architecture",
            MetaValue::String("gemma3".to_string()),
        )
        .kv("gemma3.embedding_length", MetaValue::U32(64))
        .kv("gemma3.block_count", MetaValue::U64(5_000_003))
        .build();
    let g = GgufFile::from_bytes(f).unwrap();
    let e = crate::loader::gguf_spec::spec_from_gguf(&g)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("block_count = 5000003") && e.contains("corrupt"),
        "{e}"
    );
}
