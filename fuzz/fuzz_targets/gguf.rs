//! GGUF header (metadata of every value type, nested arrays, tensor infos, offsets,
//! alignment), then `ModelConfig::from_gguf` and the weight-map check on what parses.
//! Invariants: no panic; what the parser accepts is self-consistent (every tensor's bytes lie
//! in the file); nothing allocates by an unchecked count (the allocator guard).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::model::config::ModelConfig;
use tandem::model::gguf::{parse_header, GgufFile};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_header(data) else {
        return;
    };
    assert!(header.data_offset % header.alignment == 0);
    let file = GgufFile::from_bytes(data.to_vec()).expect("parse_header accepted these bytes");
    for t in file.tensors() {
        let bytes = file
            .tensor_data(t)
            .expect("a parsed tensor lies inside the file");
        assert_eq!(bytes.len() as u64, t.n_bytes);
        assert!(file.tensor(&t.name).is_some());
    }
    let Ok(config) = ModelConfig::from_gguf(&file) else {
        return;
    };
    let _ = config.to_string();
    let map = config.weight_map();
    let _ = map.check(|name| file.tensor(name).map(|t| t.dims.as_slice()));
});
