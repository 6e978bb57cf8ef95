//! The CPU reference forward follows llama.cpp's greedy output (the fixtures) under the
//! near-tie rule of fixtures/README.md.
mod common;

use tandem::model::{cpu::CpuModel, loader::ModelFile};

fn follows_fixtures(short: &str, fixture: &str) {
    let Some(path) = common::model(short) else { return };
    let model = ModelFile::open(&path).unwrap();
    let mut cpu = CpuModel::load(&model).unwrap();
    let recs = common::greedy_fixtures(fixture);
    let mut outright = 0;
    let mut failures = Vec::new();
    for rec in &recs {
        let ours = cpu.generate_greedy(&rec.prompt_ids, 16);
        match common::check_greedy(&ours, rec, 16) {
            Ok(true) => outright += 1,
            Ok(false) => eprintln!("near tie in {:?}", rec.prompt),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(outright * 4 >= recs.len() * 3, "only {outright} of {} prompts match outright", recs.len());
}

#[test]
fn cpu_greedy_follows_llama_cpp_smollm2() {
    follows_fixtures("smollm2", "smollm2-135m");
}

#[test]
fn cpu_greedy_follows_llama_cpp_qwen_0_5b() {
    if common::slow("the Qwen 0.5B CPU fixture test") {
        follows_fixtures("qwen-0.5b", "qwen2.5-coder-0.5b");
    }
}
