//! The native command-line interface (clap).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tandem::engine::{
    Constraint, ContrastiveParams, DrafterOptions, Engine, EngineOptions, Event, GenerateOptions,
    MethodSpec, SampleParams,
};
use tandem::gpu::{self, GpuOptions};
use tandem::model::loader::ModelFile;
use tandem::model::{files, gguf::GgufFile};
use tandem::tokenizer::{ChatMessage, Tokenizer};

fn open_gguf(arg: &str) -> tandem::Result<GgufFile> {
    GgufFile::open(files::resolve(arg)?)
}

/// `tandem inspect` for a GGUF file whose model tandem cannot build: the header's facts, the
/// tokenizer (built, so its errors show too), why the model does not load, and the tensors.
fn describe_unsupported_gguf(g: &GgufFile, why: &str) -> String {
    let h = g.header();
    let meta_str = |k: &str| g.metadata(k).and_then(|v| v.as_str()).unwrap_or("?");
    let mut out = format!(
        "file:     {} (GGUF v{}, {} bytes, {} metadata keys)\n",
        g.source(),
        h.version,
        g.bytes().len(),
        h.metadata.len()
    );
    out += &format!(
        "architecture: {} (cannot run: {why})\n",
        meta_str("general.architecture")
    );
    out += &match Tokenizer::from_gguf_metadata(&h.metadata) {
        Ok(t) => format!(
            "tokenizer: {} ({} tokens, BOS {:?} added: {}, chat template: {})\n",
            meta_str("tokenizer.ggml.model"),
            t.vocab_size(),
            t.bos_id(),
            t.add_bos(),
            if t.chat_template().is_some() {
                "yes"
            } else {
                "none"
            }
        ),
        Err(e) => format!("tokenizer: {e}\n"),
    };
    let tensors: Vec<_> = g
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.n_bytes))
        .collect();
    out += &tandem::model::loader::describe_tensors(&tensors);
    out
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
pub(crate) struct GpuArgs {
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
    /// Device memory (MiB) the model and its sessions may hold; past it loading fails with
    /// an out-of-memory error instead of the driver's [env: TANDEM_GPU_MEMORY_MB]
    #[arg(long, value_name = "MIB", env = "TANDEM_GPU_MEMORY_MB")]
    gpu_memory: Option<u64>,
}

impl GpuArgs {
    pub(crate) fn options(&self) -> GpuOptions {
        let env = GpuOptions::from_env();
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            no_f16: self.no_f16 || env.no_f16,
            no_subgroups: self.no_subgroups || env.no_subgroups,
            max_binding_override: None,
            memory_budget: self.gpu_memory.map(|mb| mb << 20),
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
    /// List the drafting methods (the registry `--method` and `bench --methods` read)
    Methods,
    /// Print a model's description and its tensor counts per type
    Inspect {
        /// Model file (GGUF) or reference model name (smollm2, qwen-0.5b, qwen-1.5b)
        #[arg(short, long)]
        model: String,
    },
    /// Generate text from a prompt, streaming it to stdout (greedy decoding)
    Run {
        #[command(flatten)]
        gen: GenArgs,
        /// The prompt
        #[arg(short, long)]
        prompt: String,
        /// Apply the model's chat template to the prompt as one user message
        #[arg(long)]
        chat: bool,
        /// Print one JSON object with the text, tokens and statistics on the last line
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
    /// Interactive chat with history (the KV cache of earlier turns is reused)
    Chat {
        #[command(flatten)]
        gen: GenArgs,
        /// A system message to start the conversation with
        #[arg(long)]
        system: Option<String>,
    },
    /// Prefill and decode speed and weight bandwidth per model (Markdown)
    BenchDecode {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        bench: crate::bench_decode::BenchDecodeArgs,
    },
    /// One device's step costs (a target pass over T = 1, 2, 4, … rows, a drafter pass, µs
    /// per dispatch) as a JSON cost table for `bench --project`
    BenchCost {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        bench: crate::bench_cost::BenchCostArgs,
    },
    /// Spec-Bench-style benchmark: every method on a question set, speedup over plain
    /// decoding, τ, losslessness (writes JSON, Markdown and an SVG chart)
    Bench {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        bench: crate::bench::BenchArgs,
    },
    /// Serve the OpenAI HTTP API (chat/completions, completions, models, tokenize,
    /// detokenize, metrics, health) with speculative decoding per request
    Serve {
        #[command(flatten)]
        serve: crate::serve::ServeArgs,
    },
    /// Write a GGUF file's header only (metadata, tokenizer, tensor infos; no weights), for
    /// `bench-decode --synthetic-weights` where the weights cannot be copied
    HeaderOnly {
        /// The GGUF file (or a reference model name)
        input: String,
        /// Where to write the header
        output: std::path::PathBuf,
    },
    /// Download reference models into the model cache (sha256-checked; idempotent)
    Fetch {
        /// smollm2, qwen-0.5b, qwen-1.5b, gemma-3-270m or all (default: smollm2)
        names: Vec<String>,
    },
    /// Time the quantized matmul per weight type at the reference models' shapes (Markdown)
    BenchKernels {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        bench: crate::bench_kernels::BenchKernelsArgs,
    },
}

/// The method table under `--help` of the commands that take a method.
fn methods_help() -> String {
    format!(
        "Methods (--method SPEC, bench --methods; SPEC = name[:key=value,...]):\n{}",
        tandem::speculative::registry::methods_table()
    )
}

pub fn main() {
    let mut cmd = Cli::command().after_help(methods_help());
    for name in ["run", "chat", "bench", "serve"] {
        cmd = cmd.mut_subcommand(name, |c| c.after_help(methods_help()));
    }
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> tandem::Result<()> {
    match cli.command {
        Command::Devices { gpu, json } => devices(&gpu.options(), json),
        Command::Methods => {
            print!("{}", tandem::speculative::registry::methods_table());
            Ok(())
        }
        Command::Inspect { model } => {
            let path = files::resolve(&model)?;
            match ModelFile::open(&path) {
                Ok(file) => println!("{}", file.describe()),
                // A GGUF file of an architecture tandem cannot run yet (gemma3) is still
                // described from its header: tokenizer, architecture, tensors.
                Err(tandem::Error::Unsupported(why)) => match GgufFile::open(&path) {
                    Ok(g) => println!("{}", describe_unsupported_gguf(&g, &why)),
                    Err(_) => return Err(tandem::Error::Unsupported(why)),
                },
                Err(e) => return Err(e),
            }
            Ok(())
        }
        Command::Run {
            gen,
            prompt,
            chat,
            json,
        } => run_generate(&gen, &prompt, chat, json),
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
        Command::Chat { gen, system } => crate::chat::run(&gen, system.as_deref()),
        Command::BenchDecode { gpu, bench } => crate::bench_decode::run(&gpu.options(), &bench),
        Command::BenchCost { gpu, bench } => crate::bench_cost::run(&gpu.options(), &bench),
        Command::Bench { gpu, bench } => crate::bench::run(&gpu.options(), &bench),
        Command::BenchKernels { gpu, bench } => crate::bench_kernels::run(&gpu.options(), &bench),
        Command::HeaderOnly { input, output } => header_only(&input, &output),
        Command::Fetch { names } => crate::fetch::run(&names),
        Command::Serve { serve } => crate::serve::run(&serve),
    }
}

fn header_only(input: &str, output: &std::path::Path) -> tandem::Result<()> {
    let file = GgufFile::open(files::resolve(input)?)?;
    let header = tandem::model::synthetic::header_only(file.bytes())?;
    std::fs::write(output, &header)
        .map_err(|e| tandem::Error::io(output.display().to_string(), e))?;
    println!(
        "{}: {} of {} bytes (the header: {} tensors, {} metadata keys)",
        output.display(),
        header.len(),
        file.bytes().len(),
        file.header().tensors.len(),
        file.header().metadata.len()
    );
    Ok(())
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

/// Model, method and generation options shared by `run` and `chat`.
#[derive(Args, Clone, Debug)]
pub(crate) struct GenArgs {
    /// Target model: GGUF file or reference name (smollm2, qwen-0.5b, qwen-1.5b), fetched
    /// into the model cache on first use
    #[arg(short, long, default_value = crate::fetch::DEFAULT_MODEL)]
    pub(crate) model: String,
    /// Drafting method: `name[:key=value,...]`, e.g. `sps`, `tree:nodes=16,width=4`,
    /// `lookup:len=8` (`tandem methods` lists every method and parameter). Default: sps
    /// with --drafter, else plain
    #[arg(long, value_name = "SPEC")]
    method: Option<String>,
    /// Drafter model (same tokenizer) for the methods that draft with a model (sps, tree)
    #[arg(short, long = "drafter", visible_alias = "draft", value_name = "PATH")]
    draft: Option<String>,
    /// Alias of `--method lookup`
    #[arg(long, conflicts_with_all = ["method", "tree"])]
    lookup: bool,
    /// Alias of `--method tree:nodes=NODES` (a dynamic draft tree with the drafter model)
    #[arg(long, value_name = "NODES", conflicts_with = "method")]
    tree: Option<usize>,
    /// Sets the method's `len` (sps: chain length; lookup: tree nodes)
    #[arg(long, value_name = "K")]
    draft_len: Option<usize>,
    /// Draft exactly --draft-len tokens every step instead of adapting to measured speed
    #[arg(long)]
    no_adaptive: bool,
    /// With a drafter model: draft only among the first N token ids (a smaller, cheaper
    /// drafter head; the output is unchanged, acceptance may move)
    #[arg(long, value_name = "N")]
    draft_vocab: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// Contrastive decoding with the drafter model (--drafter) as the amateur: the target's
    /// log-probabilities minus BETA times the drafter's, over the tokens within ALPHA of the
    /// target's top probability (e.g. 0.1,0.5)
    #[arg(long, value_name = "ALPHA,BETA", value_parser = parse_contrastive)]
    contrastive: Option<ContrastiveParams>,
    /// Most new tokens
    #[arg(short = 'n', long, default_value_t = 128)]
    max_tokens: usize,
    /// Keep generating past end-of-sequence tokens, up to --max-tokens
    #[arg(long)]
    ignore_eos: bool,
    /// KV cache size in tokens
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    #[command(flatten)]
    gpu: GpuArgs,
}

impl GenArgs {
    /// The method the flags name (`--method`, or its aliases `--lookup`, `--tree`).
    pub(crate) fn method(&self) -> tandem::Result<MethodSpec> {
        let mut spec = match (&self.method, self.tree, self.lookup) {
            (Some(m), _, _) => MethodSpec::parse(m)?,
            (None, Some(nodes), _) => MethodSpec::named("tree")?.with("nodes", nodes)?,
            (None, None, true) => MethodSpec::named("lookup")?,
            (None, None, false) if self.draft.is_some() => MethodSpec::named("sps")?,
            _ => MethodSpec::plain(),
        };
        if let Some(k) = self.draft_len {
            if !spec.has("len") {
                return Err(tandem::Error::Invalid(format!(
                    "--draft-len sets a method's len, and method {} has none (use --method {}:…)",
                    spec.name(),
                    spec.name()
                )));
            }
            spec = spec.with("len", k)?;
        }
        if spec.needs_drafter_model() && self.draft.is_none() {
            return Err(tandem::Error::Invalid(format!(
                "method {} needs a drafter model: pass --drafter PATH",
                spec.name()
            )));
        }
        Ok(spec)
    }

    /// Load the target (and drafter) and warm the pipelines up, reporting both times on
    /// stderr, so that the first prompt's prefill rate is prefill alone.
    pub(crate) fn engine(&self) -> tandem::Result<Engine> {
        // The method first: an unknown one is an error before any model is fetched or loaded.
        let mut max_draft = self.method()?.max_budget();
        // Forced drafts need room in the step whatever the method drafts.
        if self.constraint.constraint()?.is_some() && !self.constraint.no_forced_drafts {
            max_draft = max_draft.max(FORCED_DRAFT_ROOM);
        }
        let path = crate::fetch::resolve(&self.model)?;
        let t0 = std::time::Instant::now();
        let mut engine = load_engine(
            &path,
            self.draft.as_deref(),
            self.draft_vocab,
            self.ctx,
            max_draft,
            &self.gpu,
        )?;
        let load = t0.elapsed().as_secs_f64();
        let warm = crate::warmup::warm_up(&mut engine, &self.options()?)?;
        eprintln!(
            "[{} on {} ({}): loaded in {load:.2} s, warm-up (first dispatch of every pipeline) {warm:.2} s]",
            path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
            engine.gpu.info.name,
            format!("{:?}", engine.gpu.info.backend).to_lowercase(),
        );
        Ok(engine)
    }

    pub(crate) fn options(&self) -> tandem::Result<GenerateOptions> {
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            stop: vec![],
            method: self.method()?,
            adaptive: !self.no_adaptive,
            sampling: self.sampling.params(),
            constraint: self.constraint.constraint()?,
            forced_drafts: !self.constraint.no_forced_drafts,
            contrastive: self.contrastive,
            ignore_eos: self.ignore_eos,
        })
    }
}

/// `ALPHA,BETA` for `--contrastive`.
fn parse_contrastive(s: &str) -> Result<ContrastiveParams, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected ALPHA,BETA (e.g. 0.1,0.5)"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<f32>()
            .map_err(|e| format!("{x:?} in {s:?}: {e}"))
    };
    let p = ContrastiveParams {
        alpha: num(a)?,
        beta: num(b)?,
    };
    p.check().map_err(|e| e.to_string())?;
    Ok(p)
}

/// Most grammar-forced draft tokens per step `run` and `chat` make room for (the engine's
/// `max_draft` when the method drafts fewer).
const FORCED_DRAFT_ROOM: usize = 16;

/// Constrained decoding: the output must match a JSON schema, a regex or a Lark grammar.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConstraintArgs {
    /// The output is JSON valid under the JSON schema in FILE
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json_object", "grammar", "regex"])]
    json_schema: Option<std::path::PathBuf>,
    /// The output is one JSON object (any keys)
    #[arg(long, conflicts_with_all = ["grammar", "regex"])]
    json_object: bool,
    /// The output matches the Lark grammar in FILE (llguidance's dialect: `start: ...`)
    #[arg(long, value_name = "FILE", conflicts_with = "regex")]
    grammar: Option<std::path::PathBuf>,
    /// The output matches the regular expression R
    #[arg(long, value_name = "R")]
    regex: Option<String>,
    /// With a constraint: do not draft the tokens the grammar forces
    #[arg(long)]
    no_forced_drafts: bool,
}

impl ConstraintArgs {
    pub(crate) fn constraint(&self) -> tandem::Result<Option<Constraint>> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| tandem::Error::io(p.display().to_string(), e))
        };
        Ok(if let Some(p) = &self.json_schema {
            Some(Constraint::json_schema_text(&read(p)?)?)
        } else if self.json_object {
            Some(Constraint::json_object())
        } else if let Some(p) = &self.grammar {
            Some(Constraint::Lark(read(p)?))
        } else {
            self.regex.clone().map(Constraint::Regex)
        })
    }
}

/// Load the target at `path` (and the drafter `draft`, a file or reference name) on the GPU
/// `gpu` names, for `run`, `chat` and `serve`.
pub(crate) fn load_engine(
    path: &std::path::Path,
    draft: Option<&str>,
    draft_vocab: Option<usize>,
    ctx: usize,
    max_draft: usize,
    gpu: &GpuArgs,
) -> tandem::Result<Engine> {
    let file = ModelFile::open(path)?;
    let gpu = gpu::Gpu::new_blocking(&gpu.options())?;
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: ctx,
            max_draft,
        },
    )?;
    if let Some(d) = draft {
        engine.load_drafter_with(
            &ModelFile::open(crate::fetch::resolve(d)?)?,
            DrafterOptions { vocab: draft_vocab },
        )?;
    }
    Ok(engine)
}

/// Sampling options shared by the generating commands.
#[derive(Args, Debug, Clone)]
pub(crate) struct SamplingArgs {
    /// Sampling temperature; 0 (the default) decodes greedily
    #[arg(long = "temp", visible_alias = "temperature", default_value_t = 0.0)]
    pub temp: f32,
    /// With --temp: keep only the K most likely tokens (0 = off)
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// With --temp: keep the smallest set of tokens whose probability reaches P (1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// With --temp: random seed (the same seed repeats a run exactly)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampling rule, or None for greedy decoding (temperature 0).
    pub fn params(&self) -> Option<SampleParams> {
        (self.temp > 0.0).then_some(SampleParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        })
    }
}

pub(crate) fn print_stats(engine: &Engine, s: &tandem::engine::Stats) {
    if s.mask_seconds > 0.0 {
        eprintln!(
            "[constrained: {} of {} drafted tokens forced by the grammar; token masks {:.0} µs per step]",
            s.forced,
            s.drafted,
            1e6 * s.mask_seconds / s.target_passes.max(1) as f64
        );
    }
    eprintln!(
        "[{} prompt tokens ({} reused), {} generated; prefill {:.1} tok/s, decode {:.2} tok/s; {} target passes, τ = {:.2}, acceptance {:.0}%; method {}; adapter {} ({})]",
        s.prompt_tokens,
        s.reused_prompt_tokens,
        s.generated_tokens,
        s.prefill_tokens_per_s,
        s.decode_tokens_per_s,
        s.target_passes,
        s.mean_accepted_tokens,
        s.acceptance_rate * 100.0,
        s.method,
        engine.gpu.info.name,
        format!("{:?}", engine.gpu.info.backend).to_lowercase(),
    );
}

fn run_generate(gen: &GenArgs, prompt: &str, chat: bool, json: bool) -> tandem::Result<()> {
    use std::io::Write;
    let mut engine = gen.engine()?;
    let text = if chat {
        engine
            .tokenizer
            .apply_chat_template(&[ChatMessage::user(prompt)], true)?
    } else {
        prompt.to_string()
    };
    let ids = if chat {
        engine.tokenizer.encode(&text, true)?
    } else {
        engine.tokenizer.encode_raw_prompt(&text)?
    };
    let mut stdout = std::io::stdout();
    let opts = gen.options()?;
    let out = engine.generate(&ids, &opts, |ev| {
        let Event::Tokens { text, .. } = ev;
        let _ = write!(stdout, "{text}");
        let _ = stdout.flush();
        true
    })?;
    println!();
    print_stats(&engine, &out.stats);
    if json {
        let s = &out.stats;
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
