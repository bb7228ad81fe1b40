//! One prompt, many compression settings: prefill once, then compress a copy of the cache and
//! decode for each setting. Every method sees the identical prefill (same logits, same
//! captured queries), so differences between rows are the compression alone, and a grid of
//! M methods costs one prefill instead of M.

use crate::generate::{
    CacheCompressor, GenerateError, GenerateOptions, GenerateOutput, continue_from, prefill,
};
use crate::loader::TextTokenizer;
use crate::model::CausalLM;

/// One setting to run: a label for reports and the compressor (`None` = full cache).
pub struct Contender<'a> {
    pub method: String,
    /// `None` for the full cache.
    pub budget: Option<usize>,
    pub compressor: Option<&'a dyn CacheCompressor>,
}

/// Prefills `prompt_ids` once (capturing the largest observation window any contender needs)
/// and returns one generation per contender, in order. Every output carries the shared
/// prefill time.
pub fn run_contenders(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    prompt_ids: &[u32],
    contenders: &[Contender<'_>],
    opts: &GenerateOptions,
) -> Result<Vec<GenerateOutput>, GenerateError> {
    let window = contenders
        .iter()
        .filter_map(|c| c.compressor.map(|c| c.window()))
        .max()
        .unwrap_or(0);
    let pre = prefill(model, prompt_ids, window, opts.max_new_tokens)?;
    contenders
        .iter()
        .map(|c| continue_from(model, tokenizer, &pre, opts, c.compressor))
        .collect()
}
