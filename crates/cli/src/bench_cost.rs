//! `tandem bench-cost`: one device's step costs for a target (and drafter) model — a target
//! pass over T = 1, 2, 4, … verified rows, one drafter pass, µs per dispatch — as a JSON cost
//! table that `tandem bench --project COSTS.json RECORDS.json` replays a benchmark against
//! (`tandem_bench::cost`). With `--synthetic-weights` the models can be GGUF headers only
//! (`tandem header-only`), for devices the weights cannot be copied to.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use tandem::gpu::{Gpu, GpuOptions};
use tandem::model::loader::ModelFile;
use tandem::model::session::Session;
use tandem::model::transformer::ForwardLimits;
use tandem::{Error, Result};
use tandem_bench::cost::{CostTable, StepCost};
use tandem_bench::{DeviceInfo, ModelInfo};

#[derive(Args, Debug)]
pub struct BenchCostArgs {
    /// Target model: GGUF file (or header) or reference name
    #[arg(short, long)]
    model: String,
    /// Drafter model, for the methods that draft with one
    #[arg(short, long = "drafter", value_name = "PATH")]
    drafter: Option<String>,
    /// Fill every tensor with random blocks of its type (the models may be headers only)
    #[arg(long)]
    synthetic_weights: bool,
    /// The seed of --synthetic-weights
    #[arg(long, default_value_t = 0, requires = "synthetic_weights")]
    seed: u64,
    /// Tokens in the KV cache while the steps are timed (a typical prompt plus answer)
    #[arg(long, default_value_t = 256)]
    context_tokens: usize,
    /// The largest T timed (1, 2, 4, … up to it)
    #[arg(long, default_value_t = 32)]
    max_t: usize,
    /// Timed repetitions per T (the median is kept)
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// Where to write the cost table
    #[arg(long, default_value = "bench-results/costs.json")]
    out: PathBuf,
}

pub fn run(options: &GpuOptions, args: &BenchCostArgs) -> Result<()> {
    if args.max_t == 0 || args.max_t > tandem::speculative::MAX_STEP_TOKENS {
        return Err(Error::Invalid(format!(
            "--max-t: 1..={} (a verification step's rows)",
            tandem::speculative::MAX_STEP_TOKENS
        )));
    }
    if args.reps == 0 || args.context_tokens == 0 {
        return Err(Error::Invalid(
            "--reps and --context-tokens: at least 1".into(),
        ));
    }
    let target_path = crate::fetch::resolve(&args.model)?;
    let drafter_path = args
        .drafter
        .as_deref()
        .map(crate::fetch::resolve)
        .transpose()?;
    let gpu = Gpu::new_blocking(options)?;
    let device = DeviceInfo::of(&gpu);
    println!("command: `{}`", crate::bench_kernels::command_line());
    println!();
    println!(
        "adapter: {} ({}, {}), driver: {}; shader-f16: {}, subgroups: {}",
        device.adapter,
        device.backend,
        device.device_type,
        device.driver,
        device.shader_f16,
        device.subgroups
    );
    let dispatch_us = crate::bench_kernels::dispatch_floor_us(&gpu)?;

    let ts: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
        .take_while(|&t| t <= args.max_t)
        .collect();
    let (target, session) = load(&gpu, &target_path, args, args.max_t)?;
    let target_dispatches = session.dispatches(1);
    let target_steps = ts
        .iter()
        .map(|&t| {
            Ok(StepCost {
                t,
                seconds: step_seconds(&gpu, &session, t, args)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    drop(session);
    let (drafter, drafter_pass_seconds) = match &drafter_path {
        Some(p) => {
            let (info, session) = load(&gpu, p, args, 1)?;
            (Some(info), Some(step_seconds(&gpu, &session, 1, args)?))
        }
        None => (None, None),
    };
    let table = CostTable {
        tandem_version: env!("CARGO_PKG_VERSION").to_string(),
        command: crate::bench_kernels::command_line(),
        device,
        target,
        synthetic_weights: args.synthetic_weights,
        context_tokens: args.context_tokens,
        target_dispatches,
        dispatch_us,
        target_steps,
        drafter,
        drafter_pass_seconds,
    };
    table.validate()?;
    println!();
    println!(
        "target: {} ({} dispatches per pass), after {} context tokens; {:.1} µs per dispatch \
         (floor)",
        table.target.short(),
        table.target_dispatches,
        table.context_tokens,
        table.dispatch_us
    );
    println!();
    println!("| T (verified rows) | ms per target pass | ms per row | vs T = 1 |");
    println!("|---:|---:|---:|---:|");
    let one = table.target_steps[0].seconds;
    for s in &table.target_steps {
        println!(
            "| {} | {:.2} | {:.2} | {:.2}× |",
            s.t,
            s.seconds * 1e3,
            s.seconds * 1e3 / s.t as f64,
            s.seconds / one
        );
    }
    if let (Some(d), Some(p)) = (&table.drafter, table.drafter_pass_seconds) {
        println!();
        println!(
            "drafter: {}: {:.2} ms per pass ({:.2} of a target pass)",
            d.short(),
            p * 1e3,
            p / one
        );
    }
    let json = serde_json::to_string_pretty(&table)
        .map_err(|e| Error::Invalid(format!("serializing the cost table: {e}")))?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    std::fs::write(&args.out, json).map_err(|e| Error::io(args.out.display().to_string(), e))?;
    println!();
    println!("wrote {}", args.out.display());
    Ok(())
}

/// A model's file (real or synthetic) and a session with room for the context and `max_t`
/// rows of logits, its KV cache filled with the context.
fn load(
    gpu: &Gpu,
    path: &Path,
    args: &BenchCostArgs,
    max_t: usize,
) -> Result<(ModelInfo, Session)> {
    let file = if args.synthetic_weights {
        ModelFile::open_synthetic(path, args.seed)?
    } else {
        ModelFile::open(path)?
    };
    let mut info = ModelInfo::of_path(path)?;
    if args.synthetic_weights {
        info.file.push_str(" (synthetic weights)");
    }
    let need = args.context_tokens + max_t;
    if need > file.config.context_length {
        return Err(Error::Context(format!(
            "{}: {} context tokens + {max_t} rows exceed the model's context of {}",
            info.file, args.context_tokens, file.config.context_length
        )));
    }
    let session = Session::load(
        gpu,
        &file,
        ForwardLimits {
            max_ctx: need,
            max_t: tandem::speculative::MAX_STEP_TOKENS,
            max_logit_rows: max_t,
        },
    )?;
    session.prefill(gpu, &token_ids(&session)(args.context_tokens, 0), 0)?;
    Ok((info, session))
}

/// `n` token ids from position `from` on: any ids of the vocabulary serve (a step's cost
/// does not depend on which).
fn token_ids(session: &Session) -> impl Fn(usize, usize) -> Vec<u32> {
    let vocab = session.config().vocab_size.max(1) as u64;
    move |n, from| {
        (0..n)
            .map(|i| ((7 + 31 * (from + i) as u64) % vocab) as u32)
            .collect()
    }
}

/// Median seconds of one pass over `t` rows after the context (a chain, causal mask), with
/// its head and argmax over every row and the argmax readback, as a verification step has.
fn step_seconds(gpu: &Gpu, session: &Session, t: usize, args: &BenchCostArgs) -> Result<f64> {
    let ids = token_ids(session);
    let n_past = args.context_tokens;
    let tokens = ids(t, n_past);
    let positions: Vec<u32> = (0..t).map(|i| (n_past + i) as u32).collect();
    let mask = session.causal_mask(t);
    let pass = || -> Result<f64> {
        let t0 = Instant::now();
        session.forward(gpu, &tokens, &positions, &mask, n_past, 0..t)?;
        pollster::block_on(session.read_argmax(gpu, t))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    // The first pass of each shape compiles the driver's pipelines: not timed.
    pass()?;
    let mut times = (0..args.reps).map(|_| pass()).collect::<Result<Vec<_>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
