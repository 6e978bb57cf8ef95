mod common;

#[test]
fn upload_run_and_read_back_round_trip() {
    let Some(gpu) = common::gpu() else { return };
    let src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&a)) { a[id.x] = a[id.x] * 2u + 1u; }
}";
    let p = gpu.pipeline("test-double", src, "main", &[]).unwrap();
    let data: Vec<u32> = (0..100).collect();
    let buf = gpu.upload("a", &data).unwrap();
    let bg = gpu.bind("a", &p, &[&buf]);
    let mut enc = gpu.encoder("t");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(2, 1, 1);
    }
    gpu.submit(enc);
    let out: Vec<u32> = gpu.read_vec_blocking(&buf, 100).unwrap();
    assert_eq!(out, (0..100).map(|x| x * 2 + 1).collect::<Vec<u32>>());
    // The cache returns the same pipeline for the same key.
    let p2 = gpu.pipeline("test-double", src, "main", &[]).unwrap();
    assert!(std::sync::Arc::ptr_eq(&p, &p2));
}

#[test]
fn broken_shader_is_an_error_not_a_panic() {
    let Some(gpu) = common::gpu() else { return };
    let err = gpu
        .pipeline("broken", "fn main( {", "main", &[])
        .unwrap_err();
    assert!(err.to_string().contains("broken"), "{err}");
}

#[test]
fn buffer_larger_than_the_adapter_allows_is_an_error() {
    let Some(gpu) = common::gpu() else { return };
    let too_big = gpu.limits.max_buffer_size + 4;
    let err = gpu.storage("huge", too_big).unwrap_err();
    assert!(err.to_string().contains("max_buffer_size"), "{err}");
}

#[test]
fn unknown_backend_is_an_error() {
    let err = tandem::gpu::parse_backend("glide").unwrap_err();
    assert!(err.to_string().contains("glide"));
}
