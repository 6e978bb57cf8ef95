//! One Rust wrapper per shader family. A wrapper builds its pipeline(s) once in `new`,
//! makes bind groups at load time, and records dispatches into a compute pass; it never
//! allocates GPU objects or reads back on the hot path.
//!
//! Binding convention shared by every kernel whose work depends on the step:
//! `@group(0) @binding(0) var<uniform> step: Step;` — one buffer per forward, written
//! once per step, so nothing else has to be rewritten when T changes.

/// Per-step values every step-dependent kernel reads (WGSL: `struct Step { t: u32,
/// n_past: u32, _p0: u32, _p1: u32 }`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    /// Tokens in this step (1 for plain decode; tree nodes + 1 for verification; a chunk for prefill).
    pub t: u32,
    /// Tokens already in the KV cache before this step (the prefix length).
    pub n_past: u32,
    pub _p0: u32,
    pub _p1: u32,
}

impl Step {
    pub fn new(t: u32, n_past: u32) -> Self {
        Step {
            t,
            n_past,
            _p0: 0,
            _p1: 0,
        }
    }
}
