//! A Hugging Face model from memory: `config.json NUL model.safetensors` (the safetensors
//! header, tensor names, dtypes, offsets, then `ModelConfig::from_hf_json`).
//! Invariants: no panic; every tensor handed out lies in its shard; bounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::model::safetensors::SafetensorsModel;

fuzz_target!(|data: &[u8]| {
    let (config, shard) = tandem_fuzz::split_nul(data);
    let config = String::from_utf8_lossy(config);
    let Ok(model) =
        SafetensorsModel::from_parts(&config, vec![("model.safetensors".into(), shard.to_vec())])
    else {
        return;
    };
    for t in model.tensors() {
        let bytes = model
            .tensor_data(t)
            .expect("a listed tensor lies inside its shard");
        assert_eq!(bytes.len(), t.range.len());
        assert!(t.range.end <= shard.len());
    }
    let map = model.config().weight_map();
    let _ = map.check(|name| model.tensor(name).map(|t| t.dims.as_slice()));
});
