//! PyramidKV: SnapKV scores with pyramid-shaped layer budgets (more entries in lower layers,
//! where attention is broad; fewer in higher layers, where it is focused). Cai et al. 2024,
//! "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling",
//! arXiv:2406.02069.

use super::{Allocator, LayerView, Press, PressError, Scores, snapkv::SnapKv};

pub struct PyramidKv;

impl Press for PyramidKv {
    fn name(&self) -> &'static str {
        "pyramidkv"
    }
    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        SnapKv.score(view)
    }
    fn allocator(&self) -> Allocator {
        Allocator::Pyramid
    }
}
