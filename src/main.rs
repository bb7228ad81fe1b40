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
    // glibc serves blocks above its mmap threshold with fresh mappings and hands a heap top
    // above its trim threshold back to the kernel, so a prefill's activations (1–8 MiB per
    // product and layer) were page-faulted in and zeroed by the kernel layer after layer
    // (~8% of a 4K prefill in `perf`). Fixed thresholds keep them in the heap, reused: prefill
    // +8–13% at 1K and 4K tokens (`bench`, alternating binaries), peak RSS +1–3 MiB. A 64 MiB
    // trim threshold is as fast as 256 and bounds what an idle `serve` keeps of freed heap.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let args = cli::Cli::parse();
    compresskv_runtime::kernels::join_thread_pool();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
