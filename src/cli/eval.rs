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

pub fn run(device: &super::DeviceArgs, a: EvalArgs) -> anyhow::Result<()> {
    match a.cmd {
        EvalCommand::Niah(a) => super::eval_niah::run(device, a),
        EvalCommand::Longbench(a) => super::eval_longbench::run(device, a),
    }
}
