//! Compute pipelines built once and looked up by key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// Pipelines by key. Building one compiles its shader; that happens at load time,
/// never inside the decode loop.
#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn get_or_create(
        &self,
        device: &wgpu::Device,
        key: &str,
        source: &str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache poisoned".into()))?;
        if let Some(p) = map.get(key) {
            return Ok(p.clone());
        }
        // Validate with naga first so a broken shader is a clear error, not a wgpu panic.
        validate_wgsl(key, source)?;
        #[cfg(not(target_arch = "wasm32"))]
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        // On native the scope's result is ready at once; in the browser the error (if
        // any) arrives later through the uncaptured-error log that `Gpu::check_errors` reads.
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building pipeline '{key}': {e}")));
        }
        let pipeline = Arc::new(pipeline);
        map.insert(key.to_string(), pipeline.clone());
        Ok(pipeline)
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parse and validate WGSL with naga (the same front end wgpu uses natively).
pub fn validate_wgsl(name: &str, source: &str) -> Result<()> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        Error::Gpu(format!(
            "shader '{name}' does not parse: {}",
            e.emit_to_string(source)
        ))
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| {
        Error::Gpu(format!(
            "shader '{name}' is invalid: {}",
            e.emit_to_string(source)
        ))
    })?;
    Ok(())
}
