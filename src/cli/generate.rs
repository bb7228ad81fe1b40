//! `compresskv generate`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use compresskv_runtime::generate::{GenerateOptions, GenerateOutput, generate};
use compresskv_runtime::loader::load_model;

use super::table::{Table, bytes_kept};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model id (e.g. google/gemma-3-270m), HF model directory, or .gguf file.
    #[arg(long)]
    pub model: String,
    /// The prompt text. An empty prompt is an error (there is nothing to continue from).
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from this UTF-8 file instead.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature, ≥ 0 (0 = greedy).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = parse_temperature)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this, in
    /// (0, 1] (1 = no cut).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = parse_top_p)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub press: super::press_args::PressArgs,
    #[arg(long)]
    pub json: bool,
    /// With --json: add `kept_positions` (per layer and KV head, the original prompt positions
    /// kept after compression, ascending) and `prompt_token_ids`, so another engine's selection
    /// (e.g. `integrations/kvpress`) can be checked against ours on the same tokens.
    #[arg(long, requires = "json")]
    pub kept_positions: bool,
}

fn parse_temperature(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(_) => Err("must be a finite number ≥ 0 (0 = greedy)".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_top_p(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        Ok(_) => Err("must be in (0, 1] (1 = no nucleus cut)".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(device: &super::DeviceArgs, args: GenerateArgs) -> anyhow::Result<()> {
    let device = device.runtime()?;
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --prompt-file {}", f.display()))?,
        (None, None) => unreachable!("clap requires one"),
    };
    if prompt.trim().is_empty() {
        anyhow::bail!(
            "the prompt is empty: give some text with --prompt, or a non-empty --prompt-file"
        );
    }
    let loaded = load_model(&args.model, &device)?;
    let ids = loaded.tokenizer.encode(&prompt, true)?;
    let eos = loaded.eos_ids();
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_strings: args.stop.clone(),
        eos_ids: eos,
    };
    let (compressor, profile) =
        match args
            .press
            .compressor_with_source(&loaded, &args.model, args.json)?
        {
            Some((c, source)) => (Some(c), source),
            None => (None, None),
        };
    let out = generate(
        &loaded.model,
        &loaded.tokenizer,
        &ids,
        &opts,
        compressor
            .as_ref()
            .map(|c| c as &dyn compresskv_runtime::generate::CacheCompressor),
    )?;
    if args.json {
        let mut v = serde_json::to_value(&out)?;
        v["model"] = loaded.id.clone().into();
        v["method"] = args.press.method.clone().into();
        // Where the CompressKV profile came from: a path or `built-in:<file>`; null without one.
        v["profile"] = profile.as_ref().map(|p| p.to_string()).into();
        v["kv_entries_kept_per_layer"] = serde_json::to_value(&out.kv_entries_per_layer)?;
        v["kv_cache_bytes_kept"] = out.kv_cache_bytes.into();
        if args.kept_positions {
            let kept = out.compression.as_ref().map(|c| &c.kept_positions);
            let kept = kept.context(
                "--kept-positions reports what a compression kept, and none ran: give \
                 --method M with --budget N or --ratio R (--method full alone keeps everything)",
            )?;
            v["kept_positions"] = serde_json::to_value(kept)?;
            v["prompt_token_ids"] = serde_json::to_value(&ids)?;
        }
        super::print_json(&v)?;
    } else {
        println!("{}{}", prompt, out.text);
        eprintln!();
        let t = Table::new()
            .col("method", |_: &GenerateOutput| args.press.method.clone())
            .col("prompt tokens", |o| o.prompt_tokens.to_string())
            .col("new tokens", |o| o.token_ids.len().to_string())
            .col("prefill", |o| {
                format!(
                    "{:.0} ms ({:.0} tok/s)",
                    o.prefill_ms,
                    o.prompt_tokens as f64 / (o.prefill_ms / 1e3)
                )
            })
            .col("compress", |o| format!("{:.0} ms", o.compress_ms))
            .col("decode", |o| format!("{:.1} tok/s", o.decode_tokens_per_s))
            .col("KV cache", |o| {
                bytes_kept(o.kv_cache_bytes_full, o.kv_cache_bytes)
            });
        eprintln!("{}", t.render([&out]));
        if let Some(p) = &profile {
            eprintln!("profile: {p}");
        }
    }
    Ok(())
}
