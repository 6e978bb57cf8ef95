//! The one place that talks to wgpu set-up: adapter choice, device creation with the
//! adapter's real limits and optional features, buffer helpers, the pipeline cache and
//! the readback function (the only GPU→CPU sync point; grep `read_back` to find them all).

mod pipelines;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::{Error, Result};

pub use pipelines::{validate_wgsl, PipelineCache};

/// Which adapter to use. Every field is optional; `Default` picks the first
/// high-performance adapter of any backend.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Restrict to one backend (`vulkan`, `metal`, `dx12`, `gl`, `webgpu`).
    pub backend: Option<String>,
    /// Pick the first adapter whose name contains this text (case-insensitive).
    pub adapter: Option<String>,
    /// Do not use `shader-f16` even if the adapter has it (tests the f32 path).
    pub no_f16: bool,
    /// Do not use subgroup operations even if the adapter has them.
    pub no_subgroups: bool,
    /// Pretend `max_storage_buffer_binding_size` is at most this (tests row splitting).
    pub max_binding_override: Option<u64>,
    /// Device memory (bytes) that models and sessions may hold together; past it loading a
    /// model or opening a session is `Error::OutOfMemory`. WebGPU does not say how much
    /// memory a device has, so by default (None) only the device's own allocation failures
    /// stop it.
    pub memory_budget: Option<u64>,
}

impl GpuOptions {
    /// Options from the environment: `TANDEM_BACKEND`, `TANDEM_ADAPTER`,
    /// `TANDEM_NO_F16=1`, `TANDEM_NO_SUBGROUPS=1` (native only; the web has no env).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let flag = |k: &str| var(k).is_some_and(|v| v != "0");
        GpuOptions {
            backend: var("TANDEM_BACKEND"),
            adapter: var("TANDEM_ADAPTER"),
            no_f16: flag("TANDEM_NO_F16"),
            no_subgroups: flag("TANDEM_NO_SUBGROUPS"),
            max_binding_override: None,
            memory_budget: var("TANDEM_GPU_MEMORY_MB")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|mb| mb << 20),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Parse a backend name as given on the command line.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
        "all" => wgpu::Backends::all(),
        other => {
            return Err(Error::Invalid(format!(
                "unknown backend '{other}' (expected vulkan, metal, dx12, gl or webgpu)"
            )))
        }
    })
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        flags: wgpu::InstanceFlags::from_env_or_default(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

fn backends_for(options: &GpuOptions) -> Result<wgpu::Backends> {
    match &options.backend {
        Some(b) => parse_backend(b),
        None => Ok(wgpu::Backends::all()),
    }
}

/// What to tell a user who has no adapter at all: one sentence with the install command for
/// the platform.
#[cfg(target_os = "linux")]
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: install your GPU's Vulkan driver, or \
Mesa's software one (slow but correct) with `sudo apt-get install mesa-vulkan-drivers` \
(Fedora: `sudo dnf install mesa-vulkan-drivers`; `tandem devices` lists what wgpu sees)";
/// What to tell a user who has no adapter at all.
#[cfg(target_os = "windows")]
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: install or update your GPU vendor's \
driver (DX12 or Vulkan) from its web site or Windows Update (`tandem devices` lists what \
wgpu sees)";
/// What to tell a user who has no adapter at all.
#[cfg(target_vendor = "apple")]
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: tandem uses Metal, which comes with \
macOS 10.13 and later on a Mac with a Metal GPU (`tandem devices` lists what wgpu sees)";
/// What to tell a user who has no adapter at all.
#[cfg(not(any(target_os = "linux", target_os = "windows", target_vendor = "apple")))]
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: install a WebGPU-capable graphics \
driver (Vulkan, Metal or DX12), or use a browser with WebGPU";

/// A short description of one adapter, for `tandem devices` and benchmark headers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

impl AdapterSummary {
    fn new(info: &wgpu::AdapterInfo, features: wgpu::Features, limits: &wgpu::Limits) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        }
    }
}

/// Every adapter wgpu can see for the given options' backend (native only:
/// a browser hands out one adapter at a time). Without a backend named, OpenGL is probed
/// only when no modern API (Vulkan, Metal, DX12) has an adapter: its probing prints
/// windowing-system errors on headless machines, and [`Gpu::new`] would not pick it anyway.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    let enumerate = |backends: wgpu::Backends| {
        pollster::block_on(instance(backends).enumerate_adapters(backends))
    };
    let mut adapters = match &options.backend {
        Some(b) => enumerate(parse_backend(b)?),
        None => enumerate(wgpu::Backends::PRIMARY),
    };
    if adapters.is_empty() && options.backend.is_none() {
        adapters = enumerate(wgpu::Backends::all());
    }
    Ok(adapters
        .iter()
        .map(|a| AdapterSummary::new(&a.get_info(), a.features(), &a.limits()))
        .collect())
}

/// The GPU context: device, queue, what the adapter offers, and the pipeline cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Features enabled on the device (only the optional ones tandem uses).
    pub features: wgpu::Features,
    /// Limits enabled on the device (the adapter's own, not wgpu's defaults).
    pub limits: wgpu::Limits,
    use_f16: bool,
    use_subgroups: bool,
    max_binding: u64,
    pipelines: PipelineCache,
    /// Errors wgpu reported outside an error scope (validation, out of memory, device lost).
    errors: Arc<Mutex<Vec<String>>>,
    /// Why the device was lost, once it was (the device-lost callback sets it).
    lost: Arc<OnceLock<String>>,
    /// Device memory held by models and sessions, against the budget.
    ledger: Arc<Ledger>,
}

/// Bytes of device memory reserved by loaded models and open sessions.
#[derive(Debug, Default)]
struct Ledger {
    used: AtomicU64,
    budget: Option<u64>,
}

/// Device memory held by one model or session against [`GpuOptions::memory_budget`];
/// released when dropped (with the buffers it accounts for).
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.ledger.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .finish()
    }
}

impl Gpu {
    /// Create the context (async: works on native with `pollster` and in the browser).
    pub async fn new(options: &GpuOptions) -> Result<Gpu> {
        let adapter = match &options.backend {
            Some(_) => {
                let backends = backends_for(options)?;
                pick_adapter(&instance(backends), backends, options).await?
            }
            // Prefer the modern APIs (Vulkan, Metal, DX12, the browser's WebGPU); OpenGL
            // only when none of them has an adapter.
            None => match pick_adapter(
                &instance(wgpu::Backends::PRIMARY),
                wgpu::Backends::PRIMARY,
                options,
            )
            .await
            {
                Ok(a) => a,
                Err(_) => {
                    pick_adapter(
                        &instance(wgpu::Backends::all()),
                        wgpu::Backends::all(),
                        options,
                    )
                    .await?
                }
            },
        };
        let info = adapter.get_info();
        let offered = adapter.features();
        let mut wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !options.no_f16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if !options.no_subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = offered & wanted;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tandem"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("requesting a device from '{}': {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("wgpu: {e}");
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let (sink, lost) = (errors.clone(), Arc::new(OnceLock::new()));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let why = if msg.is_empty() {
                format!("device lost ({reason:?})")
            } else {
                format!("device lost ({reason:?}): {msg}")
            };
            let _ = lost_sink.set(why.clone());
            if let Ok(mut v) = sink.lock() {
                v.push(why);
            }
        });
        let max_binding = options
            .max_binding_override
            .unwrap_or(u64::MAX)
            .min(limits.max_storage_buffer_binding_size as u64)
            .min(limits.max_buffer_size);
        Ok(Gpu {
            use_f16: features.contains(wgpu::Features::SHADER_F16),
            use_subgroups: features.contains(wgpu::Features::SUBGROUP),
            device,
            queue,
            info,
            features,
            limits,
            max_binding,
            pipelines: PipelineCache::default(),
            errors,
            lost,
            ledger: Arc::new(Ledger {
                used: AtomicU64::new(0),
                budget: options.memory_budget,
            }),
        })
    }

    /// Blocking constructor for native programs and tests.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new(options))
    }

    /// Whether the f16 fast path may be used.
    pub fn has_f16(&self) -> bool {
        self.use_f16
    }

    /// Whether subgroup operations may be used.
    pub fn has_subgroups(&self) -> bool {
        self.use_subgroups
    }

    /// The largest byte size one storage binding may have on this device.
    pub fn max_binding_size(&self) -> u64 {
        self.max_binding
    }

    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary::new(&self.info, self.features, &self.limits)
    }

    pub fn pipelines(&self) -> &PipelineCache {
        &self.pipelines
    }

    /// A compute pipeline for `source` (WGSL) / `entry` with override `constants`, built once
    /// and cached under `key` (the key must name the source, entry and constants).
    pub fn pipeline(
        &self,
        key: &str,
        source: &str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines
            .get_or_create(&self.device, key, source, entry, constants)
    }

    /// Reserve `bytes` of device memory for `what` (a model's weights, a session's buffers)
    /// against the budget: `Error::OutOfMemory` naming what is held already when it does
    /// not fit. The reservation is released when dropped.
    pub fn reserve(&self, what: &str, bytes: u64) -> Result<Reservation> {
        let l = &self.ledger;
        let mut used = l.used.load(Ordering::Acquire);
        loop {
            let after = used.saturating_add(bytes);
            if let Some(budget) = l.budget.filter(|&b| after > b) {
                return Err(Error::OutOfMemory(format!(
                    "{what} needs {:.1} MiB of device memory, but {:.1} MiB of the {:.1} MiB \
                     budget are held by the models and sessions already open (close a session \
                     or use a shorter context)",
                    mib(bytes),
                    mib(used),
                    mib(budget)
                )));
            }
            match l
                .used
                .compare_exchange(used, after, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        Ok(Reservation {
            ledger: l.clone(),
            bytes,
        })
    }

    /// Device memory reserved by the models and sessions open now.
    pub fn memory_in_use(&self) -> u64 {
        self.ledger.used.load(Ordering::Acquire)
    }

    /// Run `alloc` (buffer creation for `what`) and turn the device's own out-of-memory
    /// error into `Error::OutOfMemory`. Natively the error scope answers at once; in the
    /// browser it arrives later through the log [`Gpu::check_errors`] reads.
    pub fn allocating<T>(&self, what: &str, alloc: impl FnOnce() -> Result<T>) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = alloc();
        #[cfg(target_arch = "wasm32")]
        let _ = what;
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::OutOfMemory(format!(
                "the device could not allocate {what}: {e}"
            )));
        }
        out
    }

    /// Fail with the errors wgpu reported asynchronously, if any (validation, out-of-memory,
    /// device lost). Called after every readback ([`Gpu::map_read`]), and every generation
    /// step ends with one, so an error anywhere in the step reaches the caller of
    /// `Engine::generate` as `Error::Gpu`. A lost device (driver reset, GPU removed) comes
    /// first in the message: the validation errors that follow it are its consequences.
    pub fn check_errors(&self) -> Result<()> {
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error log poisoned".into()))?;
        if errs.is_empty() {
            Ok(())
        } else {
            let (mut all, rest): (Vec<String>, Vec<String>) =
                errs.drain(..).partition(|e| e.starts_with("device lost"));
            all.extend(rest);
            Err(Error::Gpu(all.join("; ")))
        }
    }

    /// Why the device was lost (driver reset, GPU removed, [`Gpu::lose_device`]), once it
    /// was: everything made on it is dead, and a new `Gpu` is the only way on.
    pub fn lost(&self) -> Option<&str> {
        self.lost.get().map(String::as_str)
    }

    /// Destroy the device, as a driver reset would: fault injection for the server's
    /// recovery (`tandem serve --fault-device-lost-after-steps`) and its tests. Work in
    /// flight fails, the device-lost callback runs, [`Gpu::lost`] says so.
    pub fn lose_device(&self) {
        self.device.destroy();
    }

    /// Storage buffers are bound whole, so each must fit one storage binding as well as one
    /// buffer; checked here so the error names the buffer instead of surfacing later as a
    /// validation error of some bind group. The adapter's real binding limit is used:
    /// `max_binding_override` narrows only how weight matrices are split.
    fn check_size(&self, label: &str, size: u64) -> Result<()> {
        let (buffer, binding) = (
            self.limits.max_buffer_size,
            self.limits.max_storage_buffer_binding_size,
        );
        if size > buffer.min(binding) {
            return Err(Error::Gpu(format!(
                "buffer '{label}' needs {size} bytes but the adapter allows at most {} \
                 (max_buffer_size {buffer}, max_storage_buffer_binding_size {binding}; \
                 a shorter context makes the KV cache smaller)",
                buffer.min(binding)
            )));
        }
        Ok(())
    }

    /// A zeroed storage buffer of `size` bytes (rounded up to 4), readable back and writable.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        let size = size.max(4).next_multiple_of(4);
        self.check_size(label, size)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (padded to a multiple of 4 bytes).
    pub fn upload<T: Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        self.upload_bytes(label, bytemuck::cast_slice(data))
    }

    /// A storage buffer holding `bytes` (padded with zeros to a multiple of 4).
    pub fn upload_bytes(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        self.upload_bytes_aligned(label, bytes, 4)
    }

    /// A storage buffer holding `bytes`, padded with zeros to a multiple of `align` (a
    /// multiple of 4), e.g. 16 for shaders that read it as `array<vec4<u32>>`.
    pub fn upload_bytes_aligned(
        &self,
        label: &str,
        bytes: &[u8],
        align: u64,
    ) -> Result<wgpu::Buffer> {
        let align = align.max(4).next_multiple_of(4);
        let size = (bytes.len() as u64).max(4).next_multiple_of(align);
        self.check_size(label, size)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("mapping '{label}' for upload: {e}")))?;
            view.slice(..bytes.len()).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(buffer)
    }

    /// A uniform buffer holding `value`, rewritable with `queue.write_buffer`.
    pub fn uniform<T: Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A bind group for `pipeline`'s group 0 with `buffers` bound at bindings 0, 1, 2, …
    pub fn bind(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &layout,
            entries: &entries,
        })
    }

    /// Copy `size` bytes at `offset` of `buffer` to the CPU. This is the readback: the only
    /// place tandem waits for the GPU. The buffer needs `COPY_SRC`.
    pub async fn read_back(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let padded = size.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        self.queue.submit([enc.finish()]);
        let bytes = self.map_read(&staging, padded).await?;
        Ok(bytes[..size as usize].to_vec())
    }

    /// Wait until the GPU has finished all submitted work (once per phase, e.g. to time the
    /// prefill; never per token).
    pub async fn finish(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            self.check_errors()?;
            return Err(Error::Gpu(format!("waiting for the GPU: {e}")));
        }
        if rx.await.is_err() {
            self.check_errors()?;
            return Err(Error::Gpu(
                "waiting for the GPU was cancelled (device lost?)".into(),
            ));
        }
        self.check_errors()
    }

    /// Map a `MAP_READ` buffer and copy out its first `size` bytes.
    pub async fn map_read(&self, staging: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging
            .slice(..size)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            self.check_errors()?;
            return Err(Error::Gpu(format!("waiting for the GPU: {e}")));
        }
        let Ok(mapped) = rx.await else {
            self.check_errors()?;
            return Err(Error::Gpu("readback was cancelled (device lost?)".into()));
        };
        if let Err(e) = mapped {
            self.check_errors()?;
            return Err(Error::Gpu(format!("mapping a readback buffer: {e}")));
        }
        let bytes = staging
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?
            .to_vec();
        staging.unmap();
        self.check_errors()?;
        Ok(bytes)
    }

    /// Read back `count` values of type `T` from the start of `buffer`.
    pub async fn read_vec<T: Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        let bytes = self
            .read_back(buffer, 0, (count * std::mem::size_of::<T>()) as u64)
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Blocking [`Gpu::read_vec`] for native code and tests.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_vec_blocking<T: Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        pollster::block_on(self.read_vec(buffer, count))
    }

    /// Submit one command buffer.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.queue.submit([encoder.finish()]);
    }

    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }
}

/// A staging buffer kept for the readbacks of a loop: a decode step copies what it reads
/// into it and maps it, so no buffer is created per step.
pub struct Readback {
    staging: wgpu::Buffer,
}

impl Readback {
    pub fn new(gpu: &Gpu, label: &str, capacity: u64) -> Readback {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: capacity.next_multiple_of(4).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback { staging }
    }

    /// Appends copies of `parts` (buffer, byte offset, byte count; multiples of 4) to `enc`,
    /// back to back in the staging buffer, submits `enc` and returns each part's bytes.
    pub async fn read(
        &self,
        gpu: &Gpu,
        mut enc: wgpu::CommandEncoder,
        parts: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let mut at = 0;
        for &(buffer, offset, size) in parts {
            if size % 4 != 0 || offset % 4 != 0 || at + size > self.staging.size() {
                return Err(Error::Invalid(format!(
                    "readback of {size} bytes at offset {offset} does not fit a {}-byte \
                     staging buffer at {at} (or is not 4-byte aligned)",
                    self.staging.size()
                )));
            }
            enc.copy_buffer_to_buffer(buffer, offset, &self.staging, at, size);
            at += size;
        }
        gpu.submit(enc);
        let bytes = gpu.map_read(&self.staging, at.max(4)).await?;
        let mut out = Vec::with_capacity(parts.len());
        let mut at = 0usize;
        for &(_, _, size) in parts {
            out.push(bytes[at..at + size as usize].to_vec());
            at += size as usize;
        }
        Ok(out)
    }

    /// [`Readback::read`] of `count` values of type `T` from the start of one buffer.
    pub async fn read_vec<T: Pod>(
        &self,
        gpu: &Gpu,
        enc: wgpu::CommandEncoder,
        buffer: &wgpu::Buffer,
        count: usize,
    ) -> Result<Vec<T>> {
        let size = (count * std::mem::size_of::<T>()) as u64;
        let mut parts = self.read(gpu, enc, &[(buffer, 0, size)]).await?;
        Ok(bytemuck::pod_collect_to_vec(&parts.remove(0)))
    }
}

async fn pick_adapter(
    inst: &wgpu::Instance,
    backends: wgpu::Backends,
    options: &GpuOptions,
) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(want) = &options.adapter {
        let want = want.to_lowercase();
        let all = inst.enumerate_adapters(backends).await;
        let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
        return all
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "no adapter matches '{want}'; available: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            });
    }
    let _ = (backends, options);
    inst.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    })
    .await
    .map_err(|e| {
        log::debug!("request_adapter: {e}");
        Error::Gpu(NO_ADAPTER_HELP.to_string())
    })
}

/// Wall-clock seconds from an arbitrary origin (`Instant` natively; `Date.now()` in the
/// browser, where `std::time::Instant` is unavailable).
pub fn seconds() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        ORIGIN
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
}

/// Workgroup counts for `n` items at `per_group` items each, folded into 2-D when `n`
/// exceeds the 65,535 per-dimension limit. Shaders rebuild the linear index as
/// `wg.x + wg.y * num_workgroups.x`.
pub fn groups_2d(n: u32, per_group: u32) -> (u32, u32) {
    let groups = n.div_ceil(per_group).max(1);
    if groups <= 65_535 {
        (groups, 1)
    } else {
        let y = groups.div_ceil(65_535);
        (groups.div_ceil(y), y)
    }
}
