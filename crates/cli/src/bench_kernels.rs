//! `tandem bench-kernels`: times the quantized matmul for each weight type of the reference
//! models at their real shapes and prints a Markdown table (the "Kernels" section of
//! BENCHMARKS.md is its output).

use std::io::Write;

use clap::Args;
use tandem::gpu::{Gpu, GpuOptions};
use tandem::kernels::bench::{bench_matmul_layout, MatmulBench};
use tandem::kernels::matmul::{QuantMatrix, SMALL_T_MAX};
use tandem::kernels::Layout;
use tandem::quant::GgmlType;
use tandem::{Error, Result};

/// The weight types of the reference models (MODELS.md), plus F16 and Q4_0, then the other
/// types real GGUF files use (Q5_K_M, Q3_K_M, Q2_K, IQ4_XS/IQ4_NL mixes).
const DEFAULT_TYPES: &str =
    "Q4_1,Q5_0,Q8_0,Q4_K,Q6_K,F16,F32,Q4_0,Q5_1,Q2_K,Q3_K,Q5_K,IQ4_NL,IQ4_XS";
/// N×K of Qwen2.5-Coder's big matrices: 0.5B ffn_down, 1.5B ffn_down, 1.5B ffn_gate/up,
/// 1.5B output head.
const DEFAULT_SHAPES: &str = "896x4864,1536x8960,8960x1536,151936x1536";
const HEAD: (usize, usize) = (151_936, 1536);
/// Types that hold the vocabulary head in the reference models (Q6_K in the 1.5B, Q8_0 in
/// the 0.5B); without `--all` the head shape is timed for these only.
const HEAD_TYPES: [GgmlType; 2] = [GgmlType::Q6_K, GgmlType::Q8_0];
/// Without `--iters`, each row runs as many calls as take about this long (at least 3).
const TARGET_SECS: f64 = 0.5;

#[derive(Args, Debug)]
pub struct BenchKernelsArgs {
    /// Weight types, comma-separated
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TYPES)]
    types: Vec<String>,
    /// Matrix shapes N×K (output rows × input width), comma-separated, e.g. 896x4864
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SHAPES)]
    shapes: Vec<String>,
    /// Tokens per call (T), comma-separated; T ≤ 64 runs the small-T kernel, more the tiled one
    #[arg(long = "t", value_delimiter = ',', default_value = "1,8,32")]
    t: Vec<usize>,
    /// Calls timed per row (default: as many as take ~0.5 s, at least 3)
    #[arg(long)]
    iters: Option<usize>,
    /// Layout of the small-T kernel: auto (cpu on CPU adapters, gpu elsewhere), gpu or cpu
    #[arg(long, default_value = "auto")]
    layout: String,
    /// Time every type at the 151936×1536 head shape too (by default only Q6_K and Q8_0,
    /// the types real heads have: an F32 head is 933 MB)
    #[arg(long)]
    all: bool,
}

fn parse_type(name: &str) -> Result<GgmlType> {
    // GGUF type ids run 0..=30 with gaps; from_id refuses the gaps.
    (0..=40)
        .filter_map(|id| GgmlType::from_id(id).ok())
        .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| Error::Invalid(format!("--types: unknown GGML type '{name}'")))
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Invalid(format!("--shapes: '{s}' is not N×K (e.g. 896x4864)"));
    let (n, k) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
    Ok((
        n.trim().parse().map_err(|_| bad())?,
        k.trim().parse().map_err(|_| bad())?,
    ))
}

/// The command line as typed (the program by its file name), quoted where a shell would
/// need it.
pub(crate) fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(name) = args
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .and_then(|f| f.to_str())
    {
        args[0] = name.to_string();
    }
    args.into_iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=,./:×".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(options: &GpuOptions, args: &BenchKernelsArgs) -> Result<()> {
    let types = args
        .types
        .iter()
        .map(|s| parse_type(s))
        .collect::<Result<Vec<_>>>()?;
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>>>()?;
    if let Some(&t) = args.t.iter().find(|&&t| t == 0) {
        return Err(Error::Invalid(format!("--t: T = {t} (must be at least 1)")));
    }
    if args.iters == Some(0) {
        return Err(Error::Invalid("--iters: must be at least 1".into()));
    }
    // Refuse a bad type/shape before the first (possibly minutes-long) row.
    let mut cases = Vec::new();
    for &(n, k) in &shapes {
        for &ty in &types {
            if (n, k) == HEAD && !args.all && !HEAD_TYPES.contains(&ty) {
                continue;
            }
            QuantMatrix::check_shape(&format!("{n}×{k}"), ty, n, k)?;
            cases.push((ty, n, k));
        }
    }

    let gpu = Gpu::new_blocking(options)?;
    let layout = match args.layout.trim().to_ascii_lowercase().as_str() {
        "auto" => Layout::for_gpu(&gpu),
        "gpu" => Layout::Gpu,
        "cpu" => Layout::Cpu,
        other => {
            return Err(Error::Invalid(format!(
                "--layout: '{other}' (expected auto, gpu or cpu)"
            )))
        }
    };
    let a = gpu.summary();
    println!("command: `{}`", command_line());
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
    println!("| type | N×K | T | kernel | iters | µs per call | weight GB/s |");
    println!("|---|---|---:|---|---:|---:|---:|");
    for (ty, n, k) in cases {
        for &t in &args.t {
            let r = time_one(&gpu, ty, n, k, t, args.iters, layout)?;
            println!(
                "| {} | {n}×{k} | {t} | {} | {} | {:.1} | {:.2} |",
                ty.name(),
                if t as u32 <= SMALL_T_MAX {
                    format!("small-T ({} layout)", layout.name())
                } else {
                    "tiled".to_string()
                },
                r.iters,
                r.us_per_call,
                r.gb_per_s
            );
            // Rows appear as they finish: a full run on a software adapter takes minutes.
            std::io::stdout().flush().ok();
        }
    }
    Ok(())
}

/// One row: with a fixed `iters`, one measurement; otherwise a 1-call measurement picks
/// the count that takes about [`TARGET_SECS`].
fn time_one(
    gpu: &Gpu,
    ty: GgmlType,
    n: usize,
    k: usize,
    t: usize,
    iters: Option<usize>,
    layout: Layout,
) -> Result<MatmulBench> {
    let iters = match iters {
        Some(i) => i,
        None => {
            let probe = bench_matmul_layout(gpu, ty, n, k, t, 1, layout)?;
            ((TARGET_SECS * 1e6 / probe.us_per_call) as usize).clamp(3, 1000)
        }
    };
    bench_matmul_layout(gpu, ty, n, k, t, iters, layout)
}

/// Microseconds per dispatch of a minimal matmul (32×32, one row), 2000 in one submit: the
/// floor under every dispatch on this device (`tandem bench-cost` records it).
pub(crate) fn dispatch_floor_us(gpu: &Gpu) -> Result<f64> {
    Ok(
        bench_matmul_layout(gpu, GgmlType::Q8_0, 32, 32, 1, 2000, Layout::for_gpu(gpu))?
            .us_per_call,
    )
}
