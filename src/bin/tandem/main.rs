//! `tandem`: the native command-line program. Built for native targets only; the wasm32
//! build of the crate (the browser package) has no CLI.

#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod bench_cost;
#[cfg(not(target_arch = "wasm32"))]
mod bench_decode;
#[cfg(not(target_arch = "wasm32"))]
mod bench_kernels;
#[cfg(not(target_arch = "wasm32"))]
mod chat;
#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod fetch;
#[cfg(not(target_arch = "wasm32"))]
mod quiet;
#[cfg(not(target_arch = "wasm32"))]
mod serve;
#[cfg(not(target_arch = "wasm32"))]
mod warmup;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    quiet::headless_runtime_dir();
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
