//! Bad input on the GPU path: each is an error that says what and where, before any work,
//! never a panic.

mod common;

use tandem::engine::{Engine, EngineOptions, GenerateOptions};
use tandem::gpu::GpuOptions;
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::{tiny_model, TinyModel};
use tandem::Error;

fn file(bytes: Vec<u8>) -> ModelFile {
    ModelFile::from_gguf(GgufFile::from_bytes(bytes).unwrap()).unwrap()
}

fn tiny() -> ModelFile {
    file(tiny_model(Arch::Llama, GgmlType::Q8_0, 3).unwrap())
}

fn opts(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn a_weight_row_over_the_binding_limit_names_the_tensor_and_the_limit() {
    // The tiny model's rows are 64 elements; Q8_0 stores them in 68 bytes. A 64-byte
    // binding limit cannot hold one row of any matrix.
    let small = GpuOptions {
        max_binding_override: Some(64),
        ..GpuOptions::from_env()
    };
    let Some(gpu) = common::gpu_with(&small) else {
        return;
    };
    let Err(e) = Engine::new(gpu, &tiny(), EngineOptions::default()) else {
        panic!("a 64-byte binding limit must refuse the model");
    };
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, Error::Gpu(_)), "{msg}");
    assert!(msg.contains("token_embd.weight"), "{msg}");
    assert!(
        msg.contains("68 bytes") && msg.contains("limit of 64 bytes"),
        "{msg}"
    );
}

#[test]
fn a_kv_cache_over_the_binding_limit_names_the_buffer() {
    let Some(gpu) = common::gpu() else { return };
    // One KV cache row of the tiny model: 2 kv heads × 16 dims × 4 bytes.
    let row = 2 * 16 * 4;
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let ctx = limit / row + 1;
    let Ok(ctx32) = u32::try_from(ctx) else {
        eprintln!("SKIP: this adapter binds {limit} bytes; no u32 context can exceed that");
        return;
    };
    let mut m = TinyModel::new(Arch::Llama, GgmlType::Q8_0, 3);
    m.context_length = ctx32 as usize;
    let model = file(m.build().unwrap());
    let options = EngineOptions {
        max_ctx: ctx as usize,
        max_draft: 4,
    };
    let Err(e) = Engine::new(gpu, &model, options) else {
        panic!("a {ctx}-token KV cache must not fit a {limit}-byte binding");
    };
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, Error::Gpu(_)), "{msg}");
    assert!(
        msg.contains("blk.0.k_cache") && msg.contains(&limit.to_string()),
        "{msg}"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_any_work() {
    let Some(gpu) = common::gpu() else { return };
    let mut engine = Engine::new(gpu, &tiny(), EngineOptions::default()).unwrap();
    let ctx = engine.target.limits.max_ctx;
    assert_eq!(ctx, 256, "the tiny model's context caps the cache");
    let p = engine.tokenizer.encode("Hello world", false).unwrap();
    engine.generate(&p, &opts(3), |_| true).unwrap();

    // Longer than the context, starting with the cached prompt.
    let mut long = p.clone();
    long.resize(ctx + 1, p[0]);
    let e = engine.generate(&long, &opts(1), |_| true).unwrap_err();
    assert!(matches!(e, Error::Context(_)), "{e}");
    assert!(e.to_string().contains(&ctx.to_string()), "{e}");
    // It fits alone, but not with the tokens asked for.
    long.truncate(ctx - 2);
    let e = engine.generate(&long, &opts(3), |_| true).unwrap_err();
    assert!(matches!(e, Error::Context(_)), "{e}");
    let e = engine.generate(&[], &opts(3), |_| true).unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("empty"),
        "{e}"
    );

    // Nothing ran: the first prompt's cache is still there for the next turn.
    let mut next = p.clone();
    next.extend(engine.tokenizer.encode(" and the", false).unwrap());
    let out = engine.generate(&next, &opts(2), |_| true).unwrap();
    assert_eq!(out.stats.reused_prompt_tokens, p.len());
}

#[test]
fn a_lost_device_is_an_error_from_generate() {
    let Some(gpu) = common::gpu() else { return };
    let mut engine = Engine::new(gpu, &tiny(), EngineOptions::default()).unwrap();
    let p = engine.tokenizer.encode("Hello world", false).unwrap();
    engine.generate(&p, &opts(2), |_| true).unwrap();
    // `destroy` loses the device the way a driver reset does; wgpu then reports every
    // call as an error, and the step's readback returns it.
    assert_eq!(engine.gpu.lost(), None);
    engine.gpu.lose_device();
    let e = engine.generate(&p, &opts(2), |_| true).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, Error::Gpu(_)), "{e}");
    assert!(e.to_string().starts_with("GPU error: device lost"), "{e}");
    // What a server checks to decide to reload.
    assert!(engine
        .gpu
        .lost()
        .is_some_and(|w| w.starts_with("device lost")));
}
