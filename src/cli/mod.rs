//! Command definitions and dispatch. Every command has `--json`; human output is a table.

mod bench;
mod demo;
mod eval;
mod eval_longbench;
mod eval_niah;
mod fetch;
mod generate;
mod heatmap;
mod press_args;
mod profile;
mod profile_load;
mod profile_tune;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "compresskv",
    version,
    about = "Long-context LLM inference with a compressed KV cache (CompressKV)"
)]
pub struct Cli {
    /// Compute device: cpu, cuda[:N], wgpu, or auto.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole product in one screen: a ~4K-token needle prompt answered with the full cache
    /// and with CompressKV (fetches the default model and haystack if missing).
    Demo(demo::DemoArgs),
    /// Generate text from a prompt (optionally with a compressed KV cache).
    Generate(generate::GenerateArgs),
    /// Download and verify a model (e.g. google/gemma-3-270m) or the NIAH haystack into the cache.
    Fetch(fetch::FetchArgs),
    /// Profile a model once (Semantic Retrieval Heads, layer eviction errors) into
    /// profiles/<org>--<name>.ron.
    Profile(Box<profile::ProfileArgs>),
    /// Speed and memory per method and prompt length (prefill, compression, decode, KV, RSS).
    Bench(bench::BenchArgs),
    /// Evaluate methods side by side: `niah` (needle / passkey retrieval), `longbench`.
    Eval(eval::EvalArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(&cli.device, a),
        Command::Generate(a) => generate::run(&cli.device, a),
        Command::Fetch(a) => fetch::run(a),
        Command::Profile(a) => profile::run(&cli.device, *a),
        Command::Bench(a) => bench::run(&cli.device, a),
        Command::Eval(a) => eval::run(&cli.device, a),
    }
}

/// Prints `value` as one JSON object on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
