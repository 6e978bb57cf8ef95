//! `ModelConfig::from_hf_json` on arbitrary `config.json` text (the first byte says which
//! optional tensors exist), then the weight map it implies.
//! Invariants: no panic; an accepted config passes `validate`; bounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::model::config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, json)) = data.split_first() else {
        return;
    };
    let json = String::from_utf8_lossy(json);
    let has = |name: &str| match name {
        "output.weight" => flags & 1 != 0,
        "blk.0.attn_q.bias" => flags & 2 != 0,
        _ => false,
    };
    let Ok(config) = ModelConfig::from_hf_json(&json, has) else {
        return;
    };
    config
        .validate()
        .expect("from_hf_json returned a config that fails validate");
    let _ = config.to_string();
    let map = config.weight_map();
    assert!(map.expected().len() >= 2);
});
