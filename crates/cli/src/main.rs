//! `tandem`: the native command-line program (run, chat, bench, serve, fetch, …).

mod bench;
mod bench_cost;
mod bench_decode;
mod bench_kernels;
mod chat;
mod cli;
mod fetch;
mod quiet;
mod serve;
mod warmup;

fn main() {
    quiet::headless_runtime_dir();
    cli::main()
}
