//! One prompt, many compression settings: prefill once, then compress a copy of the cache and
//! decode for each setting. Every method sees the identical prefill (same logits, same
//! captured queries), so differences between rows are the compression alone, and a grid of
//! M methods costs one prefill instead of M.

use crate::generate::{
    CacheCompressor, GenerateError, GenerateOptions, GenerateOutput, continue_from, prefill,
};
use crate::loader::TextTokenizer;
use crate::model::CausalLM;
use crate::press::Compressor;

/// One method at one budget, as every evaluation lists them: a label for reports, the budget
/// (`None` for the full cache) and the compressor (`None` = full cache). `C` is how the
/// compressor is held: owned ([`Compressor`]) or borrowed (`&dyn CacheCompressor`).
pub struct Contender<C = Compressor> {
    pub method: String,
    pub budget: Option<usize>,
    pub compressor: Option<C>,
}

impl<C: CacheCompressor> Contender<C> {
    /// The full cache (no budget, no compressor).
    pub fn full() -> Self {
        Contender {
            method: "full".into(),
            budget: None,
            compressor: None,
        }
    }

    /// The same contender with its compressor borrowed (to run a subset of a list).
    pub fn borrowed(&self) -> Contender<&C> {
        Contender {
            method: self.method.clone(),
            budget: self.budget,
            compressor: self.compressor.as_ref(),
        }
    }
}

/// The contender list of a `methods × budgets` grid: `full` once without a budget, every other
/// method once per budget (its compressor from `make(method, budget)`), labelled `method` or
/// `method+variant`.
pub fn contender_grid<E>(
    methods: &[String],
    budgets: &[usize],
    variant: Option<&str>,
    mut make: impl FnMut(&str, usize) -> Result<Compressor, E>,
) -> Result<Vec<Contender>, E> {
    let mut out = Vec::new();
    for m in methods {
        if m == "full" {
            out.push(Contender::full());
            continue;
        }
        let label = match variant {
            Some(v) => format!("{m}+{v}"),
            None => m.clone(),
        };
        for &b in budgets {
            out.push(Contender {
                method: label.clone(),
                budget: Some(b),
                compressor: Some(make(m, b)?),
            });
        }
    }
    Ok(out)
}

/// Prefills `prompt_ids` once (capturing the largest observation window any contender needs)
/// and returns one generation per contender, in order. Every output carries the shared
/// prefill time.
pub fn run_contenders<C: CacheCompressor>(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    prompt_ids: &[u32],
    contenders: &[Contender<C>],
    opts: &GenerateOptions,
) -> Result<Vec<GenerateOutput>, GenerateError> {
    let window = contenders
        .iter()
        .filter_map(|c| c.compressor.as_ref().map(CacheCompressor::window))
        .max()
        .unwrap_or(0);
    let pre = prefill(model, prompt_ids, window, opts.max_new_tokens)?;
    contenders
        .iter()
        .map(|c| {
            let compressor = c.compressor.as_ref().map(|c| c as &dyn CacheCompressor);
            continue_from(model, tokenizer, &pre, opts, compressor)
        })
        .collect()
}
