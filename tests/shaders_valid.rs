//! Every shader in `shaders/` parses and validates with naga. Fragments (`*.inc.wgsl`) are
//! pieces concatenated into other shaders and are validated only as part of their users (the
//! activation kernels with `glu.inc.wgsl` in front, as `tandem::kernels::with_glu` loads them);
//! `*.q.wgsl` kernels are validated once per weight type with the dequant fragment prepended
//! (see shaders/README.md).

use std::path::Path;

#[test]
fn every_shader_validates_with_naga() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"));
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("shaders/ is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        // `*.inc.wgsl` are fragments; `*.q.wgsl` are kernels completed with the dequant
        // fragment for one weight type (validated per type in the next test).
        if !name.ends_with(".wgsl") || name.ends_with(".inc.wgsl") || name.ends_with(".q.wgsl") {
            continue;
        }
        let mut source = std::fs::read_to_string(&path).expect("shader is UTF-8 text");
        // The activation kernels call glu.inc.wgsl's functions (prepended at load).
        if ["silu_mul.wgsl", "gelu_mul.wgsl"].contains(&name.as_str()) {
            source = tandem::kernels::with_glu(&source);
        }
        match tandem::gpu::validate_wgsl(&name, &source) {
            Ok(()) => checked.push(name),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "invalid shaders:\n{}",
        failures.join("\n\n")
    );
    // The kernel files this crate ships must all be here and checked.
    for expected in [
        "add.wgsl",
        "argmax.wgsl",
        "attention.wgsl",
        "attention_cpu.wgsl",
        "kv_append.wgsl",
        "kv_compact.wgsl",
        "qk_norm.wgsl",
        "rmsnorm.wgsl",
        "rope.wgsl",
        "sample.wgsl",
        "silu_mul.wgsl",
        "gelu_mul.wgsl",
        "softmax.wgsl",
        "verify.wgsl",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} was not validated: {checked:?}"
        );
    }
}

#[test]
fn a_broken_shader_fails_validation() {
    // A type error that parses: the validator, not just the parser, must run.
    let src = "@compute @workgroup_size(1) fn main() { let a: u32 = 1.5; }";
    assert!(tandem::gpu::validate_wgsl("broken", src).is_err());
}

/// The kernels completed with the dequant fragment validate for every GPU weight type.
#[test]
fn quantized_kernels_validate_for_every_type() {
    use tandem::kernels::matmul::small_source;
    for ty in tandem::quant::SUPPORTED {
        // Its layouts are override constants: the kernel tests build both pipelines.
        let what = format!("matmul.q.wgsl for {}", ty.name());
        tandem::gpu::validate_wgsl(&what, &small_source(ty).unwrap()).unwrap();
        for (name, body) in [
            (
                "matmul_tiled.q.wgsl",
                include_str!("../shaders/matmul_tiled.q.wgsl"),
            ),
            ("embed.q.wgsl", include_str!("../shaders/embed.q.wgsl")),
        ] {
            let src = tandem::kernels::dequant::shader_source(ty, body).unwrap();
            tandem::gpu::validate_wgsl(&format!("{name} for {}", ty.name()), &src).unwrap();
        }
    }
}
