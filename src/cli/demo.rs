//! `compresskv demo`: the whole product on one screen — a long needle prompt answered with the
//! full cache and with CompressKV, their answers, KV-cache bytes and times side by side.

use anyhow::Context;
use clap::Args;
use compresskv_runtime::eval::niah::{Needle, NiahBuilder, NiahSample};
use compresskv_runtime::eval::run::{Contender, run_contenders};
use compresskv_runtime::generate::{GenerateOptions, GenerateOutput};
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::store;

use super::press_args::{BudgetArg, PressTuning};
use super::table::{Table, bytes};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Model id (fetched if missing), HF directory or .gguf file.
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 4096)]
    pub length: usize,
    /// Needle depth in percent of the haystack.
    #[arg(long, default_value_t = 50.0)]
    pub depth: f64,
    /// The compressed run: this method at this budget (or `auto`, the profile's recommendation).
    #[arg(long, default_value = "compresskv")]
    pub method: String,
    #[arg(long, default_value = "128")]
    pub budget: BudgetArg,
    /// Haystack directory (default: the fetched Paul Graham essays, fetched if missing);
    /// `noise`, `longbench:PATH` and `leval:PATH` as in `eval niah`.
    #[arg(long)]
    pub haystack: Option<String>,
    #[command(flatten)]
    pub tuning: PressTuning,
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: DemoArgs) -> anyhow::Result<()> {
    let say = |s: &str| {
        if !args.json {
            println!("{s}");
        }
    };
    if store::find_known_model(&args.model).is_some() && store::resolve_model(&args.model).is_err()
    {
        say(&format!("fetching {} (once)…", args.model));
        store::fetch_model(&args.model, &mut |l| say(&format!("  {l}")))?;
    }
    let haystack = super::load_haystack(args.haystack.as_deref())?;
    let device = device.runtime()?;
    let loaded = load_model(&args.model, &device)?;
    let needle = Needle::san_francisco();
    let sample = NiahBuilder::for_model(&haystack, &loaded)
        .peer_needle(&needle, args.length, args.depth)
        .context("building the demo prompt")?;
    let budget = args
        .tuning
        .resolve_budgets(&loaded, &args.model, &[args.budget], args.json)?[0];
    let (compressor, profile) =
        args.tuning
            .compressor_with_source(&loaded, &args.method, BudgetSpec::Entries(budget))?;
    let profile = profile.map(|p| p.to_string());
    let contenders = [
        Contender::full(),
        Contender {
            method: args.method.clone(),
            budget: Some(budget),
            compressor: Some(compressor),
        },
    ];
    let eos = loaded.eos_ids();
    let opts = GenerateOptions {
        max_new_tokens: sample.max_new_tokens,
        eos_ids: eos,
        stop_strings: vec!["\n".into()],
        ..Default::default()
    };
    say(&format!(
        "{}: {}-token prompt, needle at {}% (token {}); question: {}",
        loaded.id, args.length, args.depth, sample.needle_token_start, needle.question
    ));
    if let Some(p) = &profile {
        say(&format!("{} profile: {p}", args.method));
    }
    let outs = run_contenders(
        &loaded.model,
        &loaded.tokenizer,
        &sample.prompt_ids,
        &contenders,
        &opts,
    )?;
    let rows: Vec<serde_json::Value> = contenders
        .iter()
        .zip(&outs)
        .map(|(c, o)| {
            serde_json::json!({
                "method": c.method, "budget": c.budget, "answer": o.text.trim(),
                "score": sample.score(&o.text),
                "kv_cache_bytes": o.kv_cache_bytes, "kv_entries_per_layer": o.kv_entries_per_layer,
                "prefill_ms": o.prefill_ms, "compress_ms": o.compress_ms, "decode_ms": o.decode_ms,
                "decode_tokens_per_s": o.decode_tokens_per_s,
            })
        })
        .collect();
    if args.json {
        return super::print_json(&serde_json::json!({
            "model": loaded.id, "prompt_tokens": sample.prompt_ids.len(), "depth": args.depth,
            "question": needle.question, "expected": needle.answer, "runs": rows,
            "profile": profile,
        }));
    }
    render(&needle, &sample, &contenders, &outs);
    Ok(())
}

/// The human-mode report: the answers side by side and what the compression kept.
fn render(needle: &Needle, sample: &NiahSample, contenders: &[Contender], outs: &[GenerateOutput]) {
    println!("Q: {}", needle.question);
    println!("expected: {}\n", needle.answer);
    let runs: Vec<_> = contenders.iter().zip(outs).collect();
    let t = Table::new()
        .col("cache", |(c, _): &(&Contender, &GenerateOutput)| {
            match c.budget {
                Some(b) => format!("{} @ {b}", c.method),
                None => "full".into(),
            }
        })
        .col("answer", |(_, o)| o.text.trim().to_string())
        .col("recall %", |(_, o)| format!("{:.0}", sample.score(&o.text)))
        .col("KV cache", |(_, o)| bytes(o.kv_cache_bytes))
        .col("prefill (shared)", |(_, o)| {
            format!("{:.1} s", o.prefill_ms / 1e3)
        })
        .col("compress", |(_, o)| format!("{:.0} ms", o.compress_ms))
        .col("decode", |(_, o)| {
            format!(
                "{:.1} s ({:.1} tok/s)",
                o.decode_ms / 1e3,
                o.decode_tokens_per_s
            )
        });
    println!("{}", t.render(&runs));
    let (f, c) = (&outs[0], &outs[1]);
    let shrunk: Vec<String> = f
        .kv_entries_per_layer
        .iter()
        .zip(&c.kv_entries_per_layer)
        .enumerate()
        .filter(|(_, (full, kept))| kept < full)
        .map(|(l, (full, kept))| format!("{l}: {full}→{kept}"))
        .collect();
    println!(
        "\nKV cache {} → {} ({:.1}x smaller). Compressed layers ({} of {}, entries): {}.",
        bytes(f.kv_cache_bytes),
        bytes(c.kv_cache_bytes),
        f.kv_cache_bytes as f64 / c.kv_cache_bytes.max(1) as f64,
        shrunk.len(),
        f.kv_entries_per_layer.len(),
        shrunk.join(", ")
    );
    if shrunk.len() < f.kv_entries_per_layer.len() {
        println!(
            "The other layers are sliding-window layers: they never hold more than their window \
             (--sliding compress compresses them too)."
        );
    }
}
