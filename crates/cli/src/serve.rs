//! `tandem serve`'s flags and how they become a server: the method parsed before the port
//! is bound, the model resolved (fetched on first use), and the loader the server calls at
//! start and again after a lost device (load, then warm up). The server itself is the
//! `tandem-server` crate (crates/server).

use std::time::Duration;

use clap::Args;
use tandem::engine::{Engine, GenerateOptions, MethodSpec};
use tandem_server::ServeOptions;

use crate::cli::GpuArgs;

/// `tandem serve` options.
#[derive(Args, Clone, Debug)]
pub(crate) struct ServeArgs {
    /// Target model: GGUF file or reference name (smollm2, qwen-0.5b, qwen-1.5b), fetched
    /// into the model cache on first use
    #[arg(short, long, default_value = crate::fetch::DEFAULT_MODEL)]
    model: String,
    /// Drafter model (same tokenizer) for the methods that draft with a model (sps, tree)
    #[arg(short, long = "drafter", visible_alias = "draft", value_name = "PATH")]
    draft: Option<String>,
    /// With a drafter model: draft only among the first N token ids
    #[arg(long, value_name = "N")]
    draft_vocab: Option<usize>,
    /// Method of requests that name none (`name[:key=value,...]`; default: sps with
    /// --drafter, else plain). A request's `method` field overrides it
    #[arg(long, value_name = "SPEC")]
    method: Option<String>,
    /// Address to bind (loopback by default; 0.0.0.0 exposes the server to the network)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    #[arg(
        long,
        env = "TANDEM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Allow cross-origin requests from this origin (repeatable; CORS is off without it)
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// KV cache size in tokens (prompt + answer), per conversation
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Conversations whose KV caches are kept (a request that continues one reuses it);
    /// requests run one at a time on the GPU
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait; past it the server answers 503 with Retry-After
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Most new tokens per request (and the default when a request names none)
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Most draft nodes per step any request may use (`speculative.n_max` is capped at it)
    #[arg(long, default_value_t = 16)]
    max_draft: usize,
    /// Seconds a request may generate before it is stopped (finish_reason "length")
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// The model id /v1/models lists (default: the file name without .gguf)
    #[arg(long)]
    alias: Option<String>,
    /// Seconds a client may take to send a request's headers (slow clients are cut off)
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Open connections at most; more are closed at once
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Fault injection for the recovery tests: destroy the GPU device once, after this many
    /// decoding steps in all (as a driver reset would); the server then reloads the model
    #[arg(long, hide = true, value_name = "STEPS")]
    fault_device_lost_after_steps: Option<usize>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Serve with `args` until Ctrl-C.
pub(crate) fn run(args: &ServeArgs) -> tandem::Result<()> {
    // The method first: an unknown one is an error before the port is bound or a model loads.
    let method = match &args.method {
        Some(m) => MethodSpec::parse(m)?,
        None if args.draft.is_some() => MethodSpec::named("sps")?,
        None => MethodSpec::plain(),
    };
    if method.needs_drafter_model() && args.draft.is_none() {
        return Err(tandem::Error::Invalid(format!(
            "method {} needs a drafter model: pass --drafter PATH",
            method.name()
        )));
    }
    let path = crate::fetch::resolve(&args.model)?;
    let model_id = args.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| args.model.clone())
    });
    let options = ServeOptions {
        model_id,
        model_source: path.display().to_string(),
        method: method.clone(),
        drafter: args.draft.clone(),
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        cors_origin: args.cors_origin.clone(),
        parallel: args.parallel,
        queue: args.queue,
        max_tokens: args.max_tokens,
        max_draft: args.max_draft,
        timeout: Duration::from_secs(args.timeout),
        max_body: args.max_body,
        header_timeout: Duration::from_secs(args.header_timeout),
        max_connections: args.max_connections,
        fault_device_lost_after_steps: args.fault_device_lost_after_steps,
    };
    let args = args.clone();
    tandem_server::run(options, move || -> tandem::Result<Engine> {
        let mut engine = crate::cli::load_engine(
            &path,
            args.draft.as_deref(),
            args.draft_vocab,
            args.ctx,
            args.max_draft,
            &args.gpu,
        )?;
        let warm = GenerateOptions {
            method: method.clone(),
            ..Default::default()
        };
        crate::warmup::warm_up(&mut engine, &warm)?;
        Ok(engine)
    })
}
