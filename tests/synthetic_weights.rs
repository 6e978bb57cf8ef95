//! `--synthetic-weights`: a GGUF header (no weights) becomes a whole model with random blocks
//! of every tensor's type, which loads and runs like the real file; `header-only` cuts a file
//! to that header, which on its own is a clear error, never a silent load.

mod common;

use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec, StopReason};
use tandem::model::config::Arch;
use tandem::model::gguf::{parse_header_only, GgufFile};
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::synthetic::{header_only, synthesize};
use tandem::model::writer::tiny_model;
use tandem::Result;

#[test]
fn a_header_keeps_every_tensor_info_and_alone_asks_for_synthetic_weights() -> Result<()> {
    let whole = tiny_model(Arch::Qwen2, GgmlType::Q8_0, 5)?;
    let header = header_only(&whole)?;
    let full = GgufFile::from_bytes(whole.clone())?;
    assert_eq!(header.len() as u64, full.header().data_offset);
    assert!(
        header.len() < whole.len() / 4,
        "{} of {}",
        header.len(),
        whole.len()
    );
    assert_eq!(&header[..], &whole[..header.len()]);
    let h = parse_header_only(&header)?;
    assert_eq!(h.tensors, full.header().tensors);
    assert_eq!(h.metadata, full.header().metadata);
    let e = GgufFile::from_bytes(header).expect_err("a header alone is not a model file");
    assert!(e.to_string().contains("--synthetic-weights"), "{e}");
    Ok(())
}

#[test]
fn synthetic_weights_have_the_real_files_shapes_and_depend_on_the_seed_only() -> Result<()> {
    for ty in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let whole = tiny_model(Arch::Llama, ty, 5)?;
        let header = header_only(&whole)?;
        let a = synthesize(&header, 1, "tiny")?;
        // A whole file works as well as its header: its weights are ignored.
        let b = synthesize(&whole, 1, "tiny")?;
        let c = synthesize(&header, 2, "tiny")?;
        assert_eq!(a.bytes().len(), whole.len(), "{}", ty.name());
        assert_eq!(a.bytes(), b.bytes(), "{}", ty.name());
        assert_ne!(a.bytes(), c.bytes(), "{}", ty.name());
        assert_ne!(a.bytes(), &whole[..], "{}", ty.name());
        assert_eq!(
            a.header().tensors,
            GgufFile::from_bytes(whole)?.header().tensors
        );
        ModelFile::from_gguf(a)?;
    }
    Ok(())
}

/// Plain greedy decoding of 24 tokens past end-of-sequence, and the same with a draft tree.
fn decode(engine: &mut Engine, method: &str, ignore_eos: bool) -> Result<tandem::engine::Output> {
    engine.reset();
    engine.generate(
        &[1, 2, 3, 4, 5],
        &GenerateOptions {
            max_tokens: 24,
            method: MethodSpec::parse(method)?,
            adaptive: false,
            ignore_eos,
            ..Default::default()
        },
        |_| true,
    )
}

#[test]
fn synthetic_weights_run_on_the_gpu_and_speculation_stays_exact() -> Result<()> {
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let header = header_only(&tiny_model(Arch::Qwen2, ty, 5)?)?;
        let Some(gpu) = common::gpu() else {
            return Ok(());
        };
        let file = ModelFile::from_gguf(synthesize(&header, 3, "tiny")?)?;
        let mut engine = Engine::new(gpu, &file, EngineOptions::default())?;
        let plain = decode(&mut engine, "plain", true)?;
        assert_eq!(plain.tokens.len(), 24, "{}: {:?}", ty.name(), plain.tokens);
        for method in ["lookup", "suffix", "recycle"] {
            let spec = decode(&mut engine, method, true)?;
            assert_eq!(spec.tokens, plain.tokens, "{} with {method}", ty.name());
        }
    }
    Ok(())
}

#[test]
fn ignore_eos_decodes_past_the_end_of_sequence_token() -> Result<()> {
    let header = header_only(&tiny_model(Arch::Llama, GgmlType::Q8_0, 5)?)?;
    let Some(gpu) = common::gpu() else {
        return Ok(());
    };
    // The first seed whose greedy output ends with end-of-sequence before 24 tokens.
    let mut gpu = Some(gpu);
    for seed in 0..64 {
        let file = ModelFile::from_gguf(synthesize(&header, seed, "tiny")?)?;
        let g = match gpu.take() {
            Some(g) => g,
            None => match common::gpu() {
                Some(g) => g,
                None => return Ok(()),
            },
        };
        let mut engine = Engine::new(g, &file, EngineOptions::default())?;
        let stopped = decode(&mut engine, "plain", false)?;
        if stopped.stop_reason != Some(StopReason::Eos) {
            continue;
        }
        let past = decode(&mut engine, "plain", true)?;
        assert!(stopped.tokens.len() < 24, "seed {seed}");
        assert_eq!(past.tokens.len(), 24, "seed {seed}");
        assert_eq!(
            past.tokens[..stopped.tokens.len()],
            stopped.tokens[..],
            "seed {seed}"
        );
        assert_eq!(past.stop_reason, Some(StopReason::Length), "seed {seed}");
        return Ok(());
    }
    panic!("no seed in 0..64 ended with end-of-sequence: the test needs another model");
}
