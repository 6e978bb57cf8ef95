//! Browser tests: run in headless Chromium on its WebGPU adapter (SwiftShader, no shader-f16)
//! via `scripts/test-browser.sh`. Native builds compile this file to nothing.
#![cfg(target_arch = "wasm32")]

use tandem::gpu::{Gpu, GpuOptions};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default())
        .await
        .expect("the browser offers WebGPU (start Chromium with --enable-unsafe-webgpu)")
}

#[wasm_bindgen_test]
async fn browser_adapter_has_no_f16_and_round_trips_a_buffer() {
    let gpu = gpu().await;
    web_sys::console::log_1(&format!("adapter: {:?}", gpu.summary()).into());
    let src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&a)) { a[id.x] = a[id.x] * 3u; }
}";
    let p = gpu.pipeline("web-triple", src, "main", &[]).unwrap();
    let data: Vec<u32> = (0..1000).collect();
    let buf = gpu.upload("a", &data).unwrap();
    let bg = gpu.bind("a", &p, &[&buf]);
    let mut enc = gpu.encoder("t");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(16, 1, 1);
    }
    gpu.submit(enc);
    let out: Vec<u32> = gpu.read_vec(&buf, 1000).await.unwrap();
    assert_eq!(out, (0..1000).map(|x| x * 3).collect::<Vec<u32>>());
}
