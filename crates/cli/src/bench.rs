//! `tandem bench`: the Spec-Bench-style benchmark (the harness is the `tandem-bench` crate; this is
//! argument parsing, model loading, the progress bar and the exit status).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tandem::engine::{DrafterOptions, Engine, EngineOptions, MethodSpec};
use tandem::gpu::{Gpu, GpuOptions};
use tandem::model::files;
use tandem::model::loader::ModelFile;
use tandem::{Error, Result};
use tandem_bench::{
    questions, summarize, BenchMeta, BenchMethod, BenchReport, DeviceInfo, ModelInfo, Progress,
    RunSettings, Settings, BASELINE,
};

use crate::cli::SamplingArgs;

/// The Spec-Bench subset the repository carries (provenance: benchmarks/specbench/README.md),
/// built in so `tandem bench` works from any directory.
const BUILTIN_QUESTIONS: &str = include_str!("../../../benchmarks/specbench/questions.jsonl");
const BUILTIN_QUESTIONS_NAME: &str = "benchmarks/specbench/questions.jsonl (built in)";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Target model: GGUF file or reference name (smollm2, qwen-0.5b, qwen-1.5b)
    #[arg(short, long, required_unless_present = "project")]
    model: Option<String>,
    /// Run nothing: replay a benchmark's records (its specbench.json or
    /// specbench.records.jsonl) against a cost table from `tandem bench-cost` and print each
    /// method's projected speedup per task group beside the measured one
    #[arg(long, num_args = 2, value_names = ["COSTS.json", "RECORDS.json"])]
    project: Option<Vec<PathBuf>>,
    /// Drafter model (same tokenizer), needed by the methods that draft with a model
    /// (sps, tree)
    #[arg(short, long = "drafter", visible_alias = "draft", value_name = "PATH")]
    draft: Option<String>,
    /// Question file in Spec-Bench's JSONL format (question_id, category, turns); default:
    /// the 240-question subset built into tandem (benchmarks/specbench/questions.jsonl)
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Answer at most N questions per category, evenly spread over the category
    #[arg(long, value_name = "N")]
    limit_per_category: Option<usize>,
    /// Most new tokens per turn
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Methods, comma-separated, each `name[:key=value,...]` (e.g.
    /// `plain,sps:len=4,tree:nodes=16,width=4,lookup`; `tandem methods` lists them); plain,
    /// the baseline, always runs
    #[arg(long, default_value = "plain,sps,lookup")]
    methods: String,
    /// Sets `nodes` of the tree method (alias of `tree:nodes=N`)
    #[arg(long, value_name = "N")]
    tree_nodes: Option<usize>,
    /// Sets `len` of every method that has it (sps: chain length; lookup: tree nodes)
    #[arg(long, value_name = "K")]
    draft_len: Option<usize>,
    /// Sets `min_ngram` of lookup
    #[arg(long, value_name = "N")]
    lookup_min_ngram: Option<usize>,
    /// Sets `max_ngram` of lookup
    #[arg(long, value_name = "N")]
    lookup_max_ngram: Option<usize>,
    /// Sets `branches` of lookup
    #[arg(long, value_name = "N")]
    lookup_branches: Option<usize>,
    /// Draft exactly --draft-len tokens every step instead of adapting to measured speed
    #[arg(long)]
    no_adaptive: bool,
    /// With a drafter model: draft only among the first N token ids (a smaller, cheaper
    /// drafter head; the output is unchanged, acceptance may move)
    #[arg(long, value_name = "N")]
    draft_vocab: Option<usize>,
    /// Sampling (greedy by default). With a temperature every method samples on the GPU
    /// and verifies by speculative sampling, so outputs are not compared token for token
    #[command(flatten)]
    sampling: SamplingArgs,
    /// KV cache size in tokens
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Tokens of the untimed warm-up generation per method
    #[arg(long, default_value_t = 4)]
    warmup_tokens: usize,
    /// Directory for specbench.json, specbench.md, specbench.svg (and specbench.records.jsonl,
    /// written as the run goes)
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

impl BenchArgs {
    fn method_specs(&self) -> Result<Vec<BenchMethod>> {
        let mut specs: Vec<MethodSpec> = Vec::new();
        for mut spec in MethodSpec::parse_list(&self.methods)? {
            for (key, value) in [
                ("nodes", self.tree_nodes),
                ("len", self.draft_len),
                ("min_ngram", self.lookup_min_ngram),
                ("max_ngram", self.lookup_max_ngram),
                ("branches", self.lookup_branches),
            ] {
                if let (Some(v), true) = (value, spec.has(key)) {
                    spec = spec.with(key, v)?;
                }
            }
            let spec = MethodSpec::parse(&spec.to_string())?;
            if spec.needs_drafter_model() && self.draft.is_none() {
                return Err(Error::Invalid(format!(
                    "method {} needs a drafter model: pass -d DRAFTER (or leave it out of \
                     --methods)",
                    spec.name()
                )));
            }
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        if !specs.iter().any(|m| m.name() == BASELINE) {
            eprintln!("note: plain decoding is always run: it is the baseline of every speedup");
            specs.insert(0, MethodSpec::plain());
        }
        Ok(specs.into_iter().map(BenchMethod::new).collect())
    }

    fn check(&self) -> Result<()> {
        if self.sampling.temp.is_nan() || self.sampling.temp < 0.0 {
            return Err(Error::Invalid(format!(
                "--temperature {} is not a temperature (0 = greedy)",
                self.sampling.temp
            )));
        }
        if let Some(p) = self.sampling.params() {
            p.validate()?;
        }
        if self.max_new_tokens == 0 {
            return Err(Error::Invalid("--max-new-tokens must be at least 1".into()));
        }
        Ok(())
    }
}

pub fn run(gpu_options: &GpuOptions, args: &BenchArgs) -> Result<()> {
    if let Some(paths) = &args.project {
        return project(paths);
    }
    args.check()?;
    let methods = args.method_specs()?;
    let all = match &args.questions {
        Some(path) => questions::load_questions(path)?,
        None => questions::parse_questions(BUILTIN_QUESTIONS, BUILTIN_QUESTIONS_NAME)?,
    };
    let qs = questions::sample_per_category(&all, args.limit_per_category)?;
    let uses_drafter = methods.iter().any(|m| m.method.needs_drafter_model());

    let model = args
        .model
        .as_deref()
        .ok_or_else(|| Error::Invalid("-m MODEL: the target model to benchmark".into()))?;
    let target_path = files::resolve(model)?;
    eprintln!("hashing {} …", target_path.display());
    let target_info = ModelInfo::of_path(&target_path)?;
    let draft_path = match (&args.draft, uses_drafter) {
        (Some(d), true) => Some(files::resolve(d)?),
        _ => None,
    };
    let draft_info = match &draft_path {
        Some(p) if *p == target_path => Some(target_info.clone()),
        Some(p) => Some(ModelInfo::of_path(p)?),
        None => None,
    };

    let gpu = Gpu::new_blocking(gpu_options)?;
    let device = DeviceInfo::of(&gpu);
    let max_draft = methods
        .iter()
        .map(|m| m.method.max_budget())
        .max()
        .unwrap_or(0);
    let mut engine = Engine::new(
        gpu,
        &ModelFile::open(&target_path)?,
        EngineOptions {
            max_ctx: args.ctx,
            max_draft,
        },
    )?;
    if let Some(p) = &draft_path {
        engine.load_drafter_with(
            &ModelFile::open(p)?,
            DrafterOptions {
                vocab: args.draft_vocab,
            },
        )?;
    }

    let settings = RunSettings {
        max_new_tokens: args.max_new_tokens,
        adaptive: !args.no_adaptive,
        warmup_tokens: args.warmup_tokens,
        sampling: args.sampling.params(),
    };
    let meta_settings = Settings {
        questions_file: args
            .questions
            .as_ref()
            .map_or(BUILTIN_QUESTIONS_NAME.to_string(), |p| {
                p.display().to_string()
            }),
        questions: qs.len(),
        question_turns: qs.iter().map(|q| q.turns.len()).sum(),
        limit_per_category: args.limit_per_category,
        max_new_tokens: args.max_new_tokens,
        decoding: match &settings.sampling {
            None => "greedy".into(),
            Some(p) => format!(
                "sampling (temperature {}, top-k {}, top-p {}, seed {})",
                p.temperature, p.top_k, p.top_p, p.seed
            ),
        },
        adaptive: settings.adaptive,
        ctx: engine.target.limits.max_ctx,
        warmup_tokens: args.warmup_tokens,
        methods: methods
            .iter()
            .map(|m| tandem_bench::MethodInfo::of(m, settings.adaptive))
            .collect(),
        draft_vocab: args.draft_vocab.filter(|_| draft_path.is_some()),
    };
    eprintln!(
        "{} questions ({} turns) × {} methods on {} ({})",
        qs.len(),
        meta_settings.question_turns,
        methods.len(),
        device.adapter,
        device.backend
    );

    let names: Vec<String> = tandem_bench::run::run_order(&methods)
        .into_iter()
        .map(|m| m.name)
        .collect();
    let bar = ProgressBar::new((qs.len() * methods.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:24} {pos}/{len} answers  {msg}",
        )
        .map_err(|e| Error::Invalid(format!("progress bar template: {e}")))?,
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    // Records also go out one line at a time, so an interrupted hours-long run keeps what
    // it measured.
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(args.out.display().to_string(), e))?;
    let partial_path = args.out.join("specbench.records.jsonl");
    let mut partial = std::fs::File::create(&partial_path)
        .map_err(|e| Error::io(partial_path.display().to_string(), e))?;
    let mut partial_err: Option<std::io::Error> = None;
    let mut live = String::new();
    let mut current = String::new();
    let records =
        tandem_bench::run_questions(&mut engine, &qs, &methods, &settings, |p| match p {
            Progress::Warmup { method } => bar.set_message(format!("warm-up: {method}")),
            Progress::Turn {
                method,
                question,
                turn,
            } => {
                current = format!(
                    "q{} {} t{turn}/{} {method}",
                    question.id,
                    question.category,
                    question.turns.len()
                );
                bar.set_message(format!("{current} 0 tok{live}"));
            }
            Progress::Tokens { done, .. } => {
                bar.set_message(format!("{current} {done} tok{live}"));
            }
            Progress::Done { record, records } => {
                bar.inc(1);
                if partial_err.is_none() {
                    let line = serde_json::to_string(record).unwrap_or_default();
                    if let Err(e) = writeln!(partial, "{line}") {
                        partial_err = Some(e);
                    }
                }
                let s = summarize(records, &names, &[]);
                live = s
                    .iter()
                    .filter(|m| m.method != BASELINE)
                    .filter_map(|m| {
                        m.overall
                            .speedup
                            .map(|x| format!("{} {x:.2}x τ{:.2}", m.method, m.overall.tau))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if !live.is_empty() {
                    live = format!(" | speedup: {live}");
                }
                // Without a terminal the bar is hidden: log one line per answer instead.
                if bar.is_hidden() {
                    let secs: f64 = record.turns.iter().map(|t| t.wall_seconds).sum();
                    eprintln!(
                        "[{}/{}] q{} {} {}: {} tokens in {secs:.1} s{live}",
                        bar.position(),
                        bar.length().unwrap_or(0),
                        record.question_id,
                        record.category,
                        record.method,
                        record.turns.iter().map(|t| t.tokens.len()).sum::<usize>()
                    );
                }
            }
        })?;
    bar.finish_and_clear();
    if let Some(e) = partial_err {
        eprintln!("warning: writing {}: {e}", partial_path.display());
    }

    // The program's own path says nothing to a reader of the report.
    let command = std::iter::once("tandem".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let meta = BenchMeta::new(device, target_info, draft_info, meta_settings, command);
    let report = BenchReport::new(meta, records);
    let paths = report.write(&args.out)?;
    println!("{}", report.to_markdown());
    for p in &paths {
        eprintln!("wrote {}", p.display());
    }
    if !report.is_lossless() {
        return Err(Error::Mismatch(format!(
            "{} turns differ from plain decoding (first: {}); see {}",
            report.mismatches.len(),
            report.mismatches[0],
            args.out.join("specbench.md").display()
        )));
    }
    Ok(())
}

/// `bench --project COSTS.json RECORDS.json`: each method's decode speedup per task group,
/// projected onto the cost table's device, beside the speedup the records measured.
fn project(paths: &[PathBuf]) -> Result<()> {
    let [costs_path, records_path] = paths else {
        return Err(Error::Invalid(
            "--project COSTS.json RECORDS.json: two files".into(),
        ));
    };
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e));
    let costs = tandem_bench::cost::CostTable::from_json(&read(costs_path)?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", costs_path.display())))?;
    let records = tandem_bench::cost::records_from_json(&read(records_path)?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", records_path.display())))?;
    if records.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no records",
            records_path.display()
        )));
    }
    let projected = tandem_bench::cost::project(&costs, &records)?;
    let mut methods: Vec<String> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for r in &records {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
        if !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
    }
    let measured = summarize(&records, &methods, &groups);
    let onto = summarize(&projected, &methods, &groups);
    println!(
        "projected onto: {} ({}, {}), driver {}; target {}{}; {} µs per dispatch; {} \
         dispatches per pass",
        costs.device.adapter,
        costs.device.backend,
        costs.device.device_type,
        costs.device.driver,
        costs.target.short(),
        costs
            .drafter
            .as_ref()
            .map(|d| format!(", drafter {}", d.short()))
            .unwrap_or_default(),
        costs.dispatch_us.round(),
        costs.target_dispatches
    );
    println!(
        "records: {} ({} question records)",
        records_path.display(),
        records.len()
    );
    println!();
    println!("Decode speedup over plain: projected (measured where the records were timed)");
    println!();
    println!(
        "| method | {} | overall | projected tokens/s |",
        groups.join(" | ")
    );
    println!("|---|{}---:|---:|", "---:|".repeat(groups.len()));
    let cell = |p: Option<f64>, m: Option<f64>| match (p, m) {
        (Some(p), Some(m)) => format!("{p:.2}× ({m:.2}×)"),
        (Some(p), None) => format!("{p:.2}×"),
        _ => "–".into(),
    };
    for (p, m) in onto.iter().zip(&measured) {
        let cells: Vec<String> = p
            .groups
            .iter()
            .zip(&m.groups)
            .map(|(pg, mg)| cell(pg.metrics.speedup, mg.metrics.speedup))
            .collect();
        println!(
            "| {} | {} | {} | {:.2} |",
            p.method,
            cells.join(" | "),
            cell(p.overall.speedup, m.overall.speedup),
            p.overall.tokens_per_s
        );
    }
    Ok(())
}
