//! The native command-line interface (clap).

use clap::{Args, Parser, Subcommand};
use tandem::gpu::{self, GpuOptions};
use tandem::model::{files, gguf::GgufFile};
use tandem::tokenizer::Tokenizer;

fn open_gguf(arg: &str) -> tandem::Result<GgufFile> {
    GgufFile::open(files::resolve(arg)?)
}

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "LLM inference on WebGPU with exact speculative decoding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Adapter selection, shared by every command that uses the GPU.
#[derive(Args, Clone, Debug)]
struct GpuArgs {
    /// Backend: vulkan, metal, dx12 or gl [env: TANDEM_BACKEND]
    #[arg(long, env = "TANDEM_BACKEND")]
    backend: Option<String>,
    /// Use the first adapter whose name contains this text [env: TANDEM_ADAPTER]
    #[arg(long, env = "TANDEM_ADAPTER")]
    adapter: Option<String>,
    /// Never use shader-f16, even if the adapter has it
    #[arg(long)]
    no_f16: bool,
    /// Never use subgroup operations, even if the adapter has them
    #[arg(long)]
    no_subgroups: bool,
}

impl GpuArgs {
    fn options(&self) -> GpuOptions {
        let env = GpuOptions::from_env();
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            no_f16: self.no_f16 || env.no_f16,
            no_subgroups: self.no_subgroups || env.no_subgroups,
            max_binding_override: None,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter wgpu can see, with its features and key limits
    Devices {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of TEXT as a JSON array
    Tokenize {
        /// Model file (GGUF) or reference model name (smollm2, qwen-0.5b, qwen-1.5b)
        #[arg(short, long)]
        model: String,
        /// Treat special tokens written in TEXT (e.g. <|im_start|>) as plain text
        #[arg(long)]
        no_special: bool,
        /// The text to tokenize
        text: String,
    },
    /// Time the quantized matmul per weight type at the reference models' shapes (Markdown)
    BenchKernels {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        bench: crate::bench_kernels::BenchKernelsArgs,
    },
}

pub fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> tandem::Result<()> {
    match cli.command {
        Command::Devices { gpu, json } => devices(&gpu.options(), json),
        Command::Tokenize {
            model,
            no_special,
            text,
        } => {
            let file = open_gguf(&model)?;
            let tok = Tokenizer::from_gguf_metadata(&file.header().metadata)?;
            let ids = tok.encode(&text, !no_special)?;
            println!("{}", serde_json::to_string(&ids).unwrap_or_default());
            Ok(())
        }
        Command::BenchKernels { gpu, bench } => crate::bench_kernels::run(&gpu.options(), &bench),
    }
}

fn devices(options: &GpuOptions, json: bool) -> tandem::Result<()> {
    let adapters = gpu::list_adapters(options)?;
    if adapters.is_empty() {
        return Err(tandem::Error::Gpu(gpu::NO_ADAPTER_HELP.to_string()));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).unwrap_or_default()
        );
        return Ok(());
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
        println!("    driver: {} {}", a.driver, a.driver_info);
        println!(
            "    features: shader-f16={} subgroups={} timestamp-query={}",
            a.shader_f16, a.subgroups, a.timestamp_query
        );
        println!(
            "    limits: max_buffer_size={} max_storage_buffer_binding_size={} storage_buffers_per_stage={} workgroup_storage={} invocations_per_workgroup={}",
            a.max_buffer_size,
            a.max_storage_buffer_binding_size,
            a.max_storage_buffers_per_shader_stage,
            a.max_compute_workgroup_storage_size,
            a.max_compute_invocations_per_workgroup
        );
    }
    Ok(())
}
