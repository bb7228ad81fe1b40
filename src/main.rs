//! `compresskv`: the command-line edge. Errors become `anyhow` here; libraries use `thiserror`.

mod cli;
mod server;

use clap::Parser;

fn main() {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`compresskv … | head`) made
    // `println!` panic; with the default action the process ends quietly, like other tools.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    compresskv_runtime::kernels::join_thread_pool();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
