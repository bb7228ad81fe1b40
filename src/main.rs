//! `compresskv`: the command-line edge. Errors become `anyhow` here; libraries use `thiserror`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    compresskv_runtime::model::kernels::join_thread_pool();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
