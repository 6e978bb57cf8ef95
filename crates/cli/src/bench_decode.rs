//! `tandem bench-decode`: prefill and plain greedy decode speed per model, with the weight
//! bytes each decoded token reads and the bandwidth that achieves (the "Decode" section of
//! BENCHMARKS.md is its output).

use std::io::Write;
use std::path::Path;

use clap::Args;
use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::gpu::{Gpu, GpuOptions};
use tandem::model::files;
use tandem::model::loader::ModelFile;
use tandem::{Error, Result};

/// Repeated until the prompt is long enough (ordinary prose, so every tokenizer splits it
/// into ordinary tokens).
const PROMPT_TEXT: &str = "The history of computing is a story of machines that got \
smaller, faster and cheaper while the problems people asked of them grew larger. Early \
computers filled rooms and needed teams of operators; today a phone holds more memory than \
all of them together. Each step came from better materials, clever circuits and new ideas \
about how programs should be written, tested and shared. ";

#[derive(Args, Debug)]
pub struct BenchDecodeArgs {
    /// Models: GGUF files or reference names (default: the reference models in the cache)
    models: Vec<String>,
    /// Prompt length in tokens (the prefill)
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to generate per model (plain greedy decoding; end-of-sequence tokens do not
    /// stop it)
    #[arg(short = 'n', long, default_value_t = 32)]
    tokens: usize,
    /// Load each model's GGUF header only (a whole file, or one `tandem header-only`
    /// wrote) and fill every tensor with random blocks of its type: the same kernels, shapes
    /// and bytes read as the real weights, for devices the weights cannot be copied to
    #[arg(long)]
    synthetic_weights: bool,
    /// The seed of --synthetic-weights
    #[arg(long, default_value_t = 0, requires = "synthetic_weights")]
    seed: u64,
}

/// One model's figures.
struct Row {
    name: String,
    sha: String,
    weight_bytes: u64,
    dispatches: usize,
    prompt_tokens: usize,
    prefill_tps: f64,
    decoded: usize,
    decode_tps: f64,
}

pub fn run(options: &GpuOptions, args: &BenchDecodeArgs) -> Result<()> {
    if args.prompt_tokens < 2 {
        return Err(Error::Invalid(
            "--prompt-tokens: at least 2 (one to prefill, one to start decoding)".into(),
        ));
    }
    if args.tokens < 2 {
        return Err(Error::Invalid(
            "-n: at least 2 (the first token comes from the prefill step)".into(),
        ));
    }
    let models: Vec<String> = if args.models.is_empty() {
        let present: Vec<String> = files::REFERENCE_MODELS
            .iter()
            .filter(|(short, _, _)| files::reference_path(short).is_some_and(|p| p.exists()))
            .map(|(short, _, _)| short.to_string())
            .collect();
        if present.is_empty() {
            return Err(Error::Invalid(format!(
                "no reference model is in the cache ({}): run `tandem fetch`, or name \
                 model files",
                files::models_dir().display()
            )));
        }
        present
    } else {
        args.models.clone()
    };
    // Every path resolves before the first (possibly minutes-long) model runs.
    let paths = models
        .iter()
        .map(|m| files::resolve(m))
        .collect::<Result<Vec<_>>>()?;

    let mut next_gpu = Some(Gpu::new_blocking(options)?);
    if let Some(gpu) = &next_gpu {
        let a = gpu.summary();
        println!("command: `{}`", crate::bench_kernels::command_line());
        println!();
        println!(
            "adapter: {} ({}, {}), driver: {} {}; shader-f16 enabled: {}, subgroups enabled: {}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            if gpu.has_f16() { "yes" } else { "no" },
            if gpu.has_subgroups() { "yes" } else { "no" },
        );
        println!();
    }
    println!(
        "| model (sha256) | weights read per token | dispatches per token | prompt tokens | \
         prefill tokens/s | decoded tokens | decode tokens/s | ms per token | weight GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    std::io::stdout().flush().ok();
    for path in &paths {
        // Engine::new takes the context; each model gets a fresh one.
        let gpu = match next_gpu.take() {
            Some(g) => g,
            None => Gpu::new_blocking(options)?,
        };
        let r = bench_one(gpu, path, args)?;
        println!(
            "| {} ({}…) | {:.1} MB | {} | {} | {:.2} | {} | {:.3} | {:.1} | {:.3} |",
            r.name,
            &r.sha[..r.sha.len().min(12)],
            r.weight_bytes as f64 / 1e6,
            r.dispatches,
            r.prompt_tokens,
            r.prefill_tps,
            r.decoded,
            r.decode_tps,
            1e3 / r.decode_tps.max(1e-12),
            r.weight_bytes as f64 * r.decode_tps / 1e9,
        );
        std::io::stdout().flush().ok();
    }
    Ok(())
}

fn bench_one(gpu: Gpu, path: &Path, args: &BenchDecodeArgs) -> Result<Row> {
    let file = if args.synthetic_weights {
        ModelFile::open_synthetic(path, args.seed)?
    } else {
        ModelFile::open(path)?
    };
    let mut name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    if args.synthetic_weights {
        name.push_str(&format!(", synthetic weights (seed {})", args.seed));
    }
    let sha = if path.is_file() {
        crate::fetch::sha256_of(path)?
    } else {
        "directory".to_string()
    };
    let weight_bytes = weight_bytes_per_token(&file);
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: args.prompt_tokens + args.tokens + 1,
            max_draft: 0,
        },
    )?;
    let ctx = engine.target.limits.max_ctx;
    if args.prompt_tokens + args.tokens > ctx {
        return Err(Error::Context(format!(
            "{name}: {} prompt + {} new tokens exceed the model's context of {ctx}",
            args.prompt_tokens, args.tokens
        )));
    }
    let prompt = prompt_ids(&engine, args.prompt_tokens)?;
    let plain = |n| GenerateOptions {
        max_tokens: n,
        stop: vec![],
        sampling: None,
        method: MethodSpec::plain(),
        adaptive: false,
        // Exactly `n` tokens, as llama-bench decodes: an early end-of-sequence token would
        // leave too few to time (and random weights make one likely).
        ignore_eos: true,
        ..Default::default()
    };
    // A first, short run takes the one-time costs (shader compilation in the driver on the
    // first dispatch of each pipeline) out of the measurement.
    engine.generate(&prompt[..2], &plain(2), |_| true)?;
    engine.reset();
    let out = engine.generate(&prompt, &plain(args.tokens), |_| true)?;
    let s = &out.stats;
    // The first token comes out of the step that ends the prefill; the decode clock starts
    // after it, so the decode rate counts the tokens of the later passes only.
    let decoded = s.target_passes.saturating_sub(1);
    Ok(Row {
        name,
        sha,
        weight_bytes,
        dispatches: engine.session().dispatches(1),
        prompt_tokens: s.prompt_tokens,
        prefill_tps: s.prefill_tokens_per_s,
        decoded,
        decode_tps: decoded as f64 / s.decode_seconds.max(1e-12),
    })
}

/// Exactly `n` prompt tokens of [`PROMPT_TEXT`], repeated as needed.
fn prompt_ids(engine: &Engine, n: usize) -> Result<Vec<u32>> {
    let mut text = String::from(PROMPT_TEXT);
    loop {
        let ids = engine.tokenizer.encode(&text, false)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        if text.len() > 64 * n + PROMPT_TEXT.len() {
            return Err(Error::Tokenizer(format!(
                "{} bytes of text gave only {} tokens",
                text.len(),
                ids.len()
            )));
        }
        text.push_str(PROMPT_TEXT);
    }
}

/// Weight bytes one decode step reads: every tensor once (the output head included), except
/// an embedding table that is not also the output head, of which the gather reads one row.
fn weight_bytes_per_token(file: &ModelFile) -> u64 {
    let w = &file.weights;
    let tied = w.output == w.token_embd;
    file.tensor_list()
        .iter()
        .map(|&(name, dims, _, bytes)| {
            if name == w.token_embd && !tied {
                let rows = dims.iter().skip(1).product::<u64>().max(1);
                bytes / rows
            } else {
                bytes
            }
        })
        .sum()
}
