use crate::loader::gguf::GgmlType;
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}
impl BlockFormat {
    fn ggml(self) -> GgmlType {
        use BlockFormat::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K => GgmlType::Q2_K,
            Q3_K => GgmlType::Q3_K,
            Q4_K => GgmlType::Q4_K,
            Q5_K => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
            Q8_K => GgmlType::Q8_K,
        }
    }
    pub fn name(self) -> &'static str {
        self.ggml().name()
    }
    pub fn block_len(self) -> usize {
        self.ggml().block_size()
    }
    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_len())
            .then(|| cols / self.block_len() * self.block_bytes())
    }
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) {
        let mut v = Vec::new();
        crate::loader::gguf::dequantize(self.ggml(), src, dst.len(), &mut v).unwrap();
        dst.copy_from_slice(&v);
    }
}
pub fn quantize(format: BlockFormat, src: &[f32]) -> Option<Vec<u8>> {
    match format {
        BlockFormat::F32 => Some(src.iter().flat_map(|x| x.to_le_bytes()).collect()),
        _ => None,
    }
}
