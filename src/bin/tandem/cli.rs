//! The native command-line interface (clap).

use clap::{Args, Parser, Subcommand};
use tandem::engine::{Engine, Event, GenerateOptions, Method};
use tandem::gpu::{self, GpuOptions};
use tandem::model::loader::ModelFile;
use tandem::model::{files, gguf::GgufFile};
use tandem::spec::PromptLookup;
use tandem::tokenizer::{ChatMessage, Tokenizer};

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
    /// Print a model's description and its tensor counts per type
    Inspect {
        /// Model file (GGUF) or reference model name (smollm2, qwen-0.5b, qwen-1.5b)
        #[arg(short, long)]
        model: String,
    },
    /// Generate text from a prompt, streaming it to stdout (greedy decoding)
    Run {
        /// Model file (GGUF) or reference model name (smollm2, qwen-0.5b, qwen-1.5b)
        #[arg(short, long)]
        model: String,
        /// The prompt
        #[arg(short, long)]
        prompt: String,
        /// Most new tokens
        #[arg(short = 'n', long, default_value_t = 128)]
        max_tokens: usize,
        /// Apply the model's chat template to the prompt as one user message
        #[arg(long)]
        chat: bool,
        /// Speculative decoding with prompt lookup (drafts copied from the prompt and output)
        #[arg(long)]
        lookup: bool,
        /// Draft nodes per step for --lookup
        #[arg(long, default_value_t = 8)]
        draft_len: usize,
        /// KV cache size in tokens
        #[arg(long, default_value_t = 2048)]
        ctx: usize,
        /// Print one JSON object with the text, tokens and statistics on the last line
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gpu: GpuArgs,
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
        Command::Inspect { model } => {
            let file = ModelFile::open(files::resolve(&model)?)?;
            println!("{}", file.describe());
            Ok(())
        }
        Command::Run {
            model,
            prompt,
            max_tokens,
            chat,
            lookup,
            draft_len,
            ctx,
            json,
            gpu,
        } => run_generate(
            &model,
            &prompt,
            max_tokens,
            chat,
            lookup,
            draft_len,
            ctx,
            json,
            &gpu.options(),
        ),
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

#[allow(clippy::too_many_arguments)]
fn run_generate(
    model: &str,
    prompt: &str,
    max_tokens: usize,
    chat: bool,
    lookup: bool,
    draft_len: usize,
    ctx: usize,
    json: bool,
    options: &GpuOptions,
) -> tandem::Result<()> {
    use std::io::Write;
    let file = ModelFile::open(files::resolve(model)?)?;
    let gpu = gpu::Gpu::new_blocking(options)?;
    let max_tree = if lookup { draft_len } else { 0 };
    let mut engine = Engine::new(gpu, &file, ctx, max_tree)?;
    let text = if chat {
        engine
            .tokenizer
            .apply_chat_template(&[ChatMessage::user(prompt)], true)?
    } else {
        prompt.to_string()
    };
    let ids = engine.tokenizer.encode(&text, chat)?;
    let method = if lookup {
        Method::Lookup {
            lookup: PromptLookup::default(),
            budget: draft_len,
        }
    } else {
        Method::Plain
    };
    let opts = GenerateOptions {
        max_tokens,
        stop: vec![],
        method,
    };
    let mut stdout = std::io::stdout();
    let out = engine.generate(&ids, &opts, |ev| {
        let Event::Tokens { text, .. } = ev;
        let _ = write!(stdout, "{text}");
        let _ = stdout.flush();
        true
    })?;
    println!();
    let s = &out.stats;
    eprintln!(
        "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.2} tok/s; {} target passes, τ = {:.2}, acceptance {:.0}%; adapter {}]",
        s.prompt_tokens,
        s.generated_tokens,
        s.prefill_tokens_per_s,
        s.decode_tokens_per_s,
        s.target_passes,
        s.mean_accepted_tokens,
        s.acceptance_rate * 100.0,
        engine.gpu.info.name
    );
    if json {
        let v = serde_json::json!({
            "text": out.text,
            "tokens": out.tokens,
            "prompt_tokens": s.prompt_tokens,
            "stop_reason": out.stop_reason,
            "stats": s,
        });
        println!("{v}");
    }
    Ok(())
}
