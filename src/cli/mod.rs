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
mod profile_verify;
mod serve;
mod table;

use clap::{Parser, Subcommand};
use compresskv_runtime::RuntimeDevice;
use compresskv_runtime::device::{Dtype, Precision, WeightFormat};

#[derive(Parser, Debug)]
#[command(
    name = "compresskv",
    version,
    about = "Long-context LLM inference with a compressed KV cache (CompressKV)"
)]
pub struct Cli {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where and how the model computes (global flags of every command).
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Compute device: cpu, cuda[:N], wgpu, or auto.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// `fast`: weights stay quantized in memory and run on the CPU kernels; `exact`: everything
    /// in f32 through Burn (the reference the golden tests check; GPUs always use it).
    #[arg(long, global = true, value_enum, default_value_t = PrecisionArg::Fast)]
    pub precision: PrecisionArg,
    /// Convert the weight matrices at load (fast path): keep the file's format (`native`), or
    /// requantize to q8_0, f16 or f32.
    #[arg(long, global = true, value_enum, default_value_t = WeightsArg::Native)]
    pub weights: WeightsArg,
    /// The float type Burn computes in (exact path, GPUs): weights, activations and the KV
    /// cache; scores and logits are taken in f32. Default: bf16 on CUDA, f32 elsewhere.
    #[arg(long, global = true, value_enum)]
    pub dtype: Option<DtypeArg>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PrecisionArg {
    Fast,
    Exact,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum WeightsArg {
    Native,
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

impl DeviceArgs {
    pub fn runtime(&self) -> anyhow::Result<RuntimeDevice> {
        let precision = match self.precision {
            PrecisionArg::Fast => Precision::Fast,
            PrecisionArg::Exact => Precision::Exact,
        };
        let weights = match self.weights {
            WeightsArg::Native => WeightFormat::Native,
            WeightsArg::Q8_0 => WeightFormat::Q8_0,
            WeightsArg::F16 => WeightFormat::F16,
            WeightsArg::F32 => WeightFormat::F32,
        };
        if precision == Precision::Exact && weights != WeightFormat::Native {
            anyhow::bail!(
                "--weights {} applies to the fast CPU kernels; --precision exact computes in f32 \
                 from the file's weights (drop one of the two flags)",
                weights.name()
            );
        }
        let dtype = self.dtype.map(|d| match d {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::Bf16 => Dtype::Bf16,
        });
        let device = RuntimeDevice::parse_with(&self.device, dtype)?
            .with_precision(precision)
            .with_weights(weights);
        if let Some(d) = dtype
            && d != Dtype::F32
            && device.uses_cpu_kernels()
        {
            anyhow::bail!(
                "--dtype {} applies to Burn's ops (GPUs, --precision exact); the CPU kernels \
                 compute in f32 on the weights as stored (use `--weights f16` for 16-bit \
                 weights, or add `--precision exact`)",
                d.name()
            );
        }
        Ok(device)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole product in one screen: a ~4K-token needle prompt answered with the full cache
    /// and with CompressKV (fetches the default model and haystack if missing).
    Demo(demo::DemoArgs),
    /// Generate text from a prompt (optionally with a compressed KV cache).
    Generate(generate::GenerateArgs),
    /// An OpenAI-compatible HTTP server: concurrent sessions, each with its compressed cache,
    /// admitted against a KV memory budget.
    Serve(serve::ServeArgs),
    /// Download and verify a model (e.g. google/gemma-3-270m) or the NIAH haystack into the cache.
    Fetch(fetch::FetchArgs),
    /// Profile a model once (Semantic Retrieval Heads, layer eviction errors) into the user's
    /// profile directory (<cache>/profiles/<org>--<name>.ron).
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
        Command::Serve(a) => serve::run(&cli.device, a),
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

/// `--haystack`: `noise`, `longbench:PATH`, `leval:PATH`, a directory, or the fetched essays
/// (fetched now if missing).
pub fn load_haystack(
    arg: Option<&str>,
) -> anyhow::Result<compresskv_runtime::eval::niah::Haystack> {
    use anyhow::Context;
    compresskv_runtime::eval::niah::run::resolve_haystack(arg, &mut |l| eprintln!("  {l}"))
        .with_context(|| match arg {
            Some(dir) => format!("reading --haystack {dir}"),
            None => "reading the fetched haystack (run `compresskv fetch haystack`)".to_string(),
        })
}
