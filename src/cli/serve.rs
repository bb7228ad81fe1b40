//! `compresskv serve`: parses the flags and starts [`crate::server`]. The model is loaded on
//! the engine thread (so `/health` answers 503 meanwhile); the profile is found by model id.

use anyhow::Context;
use clap::Args;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::engine::BudgetSpec;

use super::press_args::{BudgetArg, PressTuning};
use crate::server::engine::{Compression, CompressorFactory};
use crate::server::{Loaded, Loader, ServerConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most tokens (prompt + generated) of one request (default: the model's context).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Sessions decoding at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// KV cache memory the sessions may use together, in GiB; requests wait until theirs fits.
    #[arg(long, default_value_t = 1.0)]
    pub kv_mem: f64,
    /// Requests that may wait for memory or a slot; more get 503.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Compression of a request that does not say (`kv_compression` in the body overrides it).
    #[arg(long, default_value = "compresskv")]
    pub method: String,
    /// Mean KV entries kept per compressed layer, or `auto` (the profile's recommendation).
    #[arg(long, default_value = "128")]
    pub budget: BudgetArg,
    /// `max_tokens` of a request that does not say.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// A Jinja chat template replacing the model's (GGUF `tokenizer.chat_template`, HF
    /// `tokenizer_config.json`).
    #[arg(long)]
    pub chat_template_file: Option<std::path::PathBuf>,
    /// Require `Authorization: Bearer KEY` (except on /health).
    #[arg(long)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Server events (listening, ready) as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(
        args.kv_mem.is_finite() && args.kv_mem > 0.0,
        "--kv-mem must be a positive number of GiB (e.g. 0.5)"
    );
    anyhow::ensure!(args.max_tokens >= 1, "--max-tokens must be at least 1");
    compresskv_runtime::press::press_by_name(&args.method).context("--method")?;
    let chat_template = match &args.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--chat-template-file {}: cannot read it", p.display()))?,
        ),
        None => None,
    };
    // A model that cannot be found fails before anything listens.
    compresskv_runtime::store::resolve_model(&args.model)
        .with_context(|| format!("--model {}", args.model))?;
    let device = device.runtime()?;
    let (model, tuning, method, budget) = (
        args.model.clone(),
        args.tuning.clone(),
        args.method.clone(),
        args.budget,
    );
    let ctx_arg = args.ctx_size;
    let loader: Loader = Box::new(move || {
        let loaded = load_model(&model, &device).with_context(|| format!("--model {model}"))?;
        let max_ctx = loaded.spec.max_position_embeddings;
        let ctx_size = ctx_arg.unwrap_or(max_ctx);
        anyhow::ensure!(
            (2..=max_ctx).contains(&ctx_size),
            "--ctx-size {ctx_size}: the model's context is {max_ctx} tokens; give 2..={max_ctx}"
        );
        let (compression, profile) = if method == "full" {
            (
                Compression {
                    method,
                    budget: None,
                },
                None,
            )
        } else {
            let b = tuning.resolve_budgets(&loaded, &model, &[budget], false)?[0];
            // Built once at start so a missing or mismatched profile stops the server early.
            let (_, source) = tuning
                .compressor_with_source(&loaded, &method, BudgetSpec::Entries(b))
                .with_context(|| format!("--method {method} --budget {b}"))?;
            let c = Compression {
                method,
                budget: Some(b),
            };
            (c, source.map(|s| s.to_string()))
        };
        let factory: CompressorFactory =
            Box::new(move |l, m, b| tuning.compressor(l, m, BudgetSpec::Entries(b)));
        Ok(Loaded {
            loaded,
            factory,
            profile,
            ctx_size,
            compression,
        })
    });
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        parallel: args.parallel,
        kv_mem_bytes: (args.kv_mem * (1u64 << 30) as f64) as usize,
        queue: args.queue,
        default_max_tokens: args.max_tokens,
        api_key: args.api_key,
        chat_template,
        json: args.json,
    };
    crate::server::run(config, loader)
}
