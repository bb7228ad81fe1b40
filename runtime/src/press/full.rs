//! `full`: no eviction — the reference every method is compared against.

use super::{LayerView, Press, PressError, Scores};

pub struct Full;

impl Press for Full {
    fn name(&self) -> &'static str {
        "full"
    }
    fn score(&self, _view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        Ok(None)
    }
}
