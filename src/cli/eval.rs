//! `compresskv eval …`: the benchmark harnesses, one subcommand each.

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub cmd: EvalCommand,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Needle-in-a-Haystack / passkey retrieval: every method on the same prompts.
    Niah(super::eval_niah::NiahArgs),
    /// LongBench v1 tasks: official prompts and metrics, plus teacher-forced fidelity of every
    /// method × budget against the full cache.
    Longbench(super::eval_longbench::LongbenchArgs),
}

pub fn run(device: &super::DeviceArgs, args: EvalArgs) -> anyhow::Result<()> {
    match args.cmd {
        EvalCommand::Niah(args) => super::eval_niah::run(device, args),
        EvalCommand::Longbench(args) => super::eval_longbench::run(device, args),
    }
}
