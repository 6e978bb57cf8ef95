// Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias) for large T (prefill chunks), tiled through
// workgroup memory. Same bindings and Params as matmul.wgsl:
//
//   step:   Step uniform; step.t = T
//   p:      Params; this dispatch covers weight rows row0 .. row0 + rows
//   w:      [rows, row_bytes] GGUF blocks of those rows, as u32 words (see dequant.inc.wgsl)
//   x:      [T, K] f32 as vec4 (K is a multiple of 16)
//   y:      [T, N] f32
//   bias:   [N] f32 (a dummy when p.has_bias == 0)
//
// Workgroup (x, y) computes tokens 64y .. 64y+64 × rows 64x .. 64x+64 of this part with
// 16 × 16 threads, 4 × 4 outputs each. Per step of BK = 32 along K, 128 threads dequantize
// one 16-element unit each into `ws` and all 256 load X into `xs` (16 KiB in all: WebGPU's
// default workgroup storage limit). Both tiles are stored k-major so that the inner loop
// reads consecutive addresses across threads.

struct Step {
    t: u32,
    n_past: u32,
    _p0: u32,
    _p1: u32,
}

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    row0: u32,
    row_bytes: u32,
    has_bias: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

const BT = 64u;
const BN = 64u;
const BK = 32u;

var<workgroup> xs: array<f32, 2048>; // [BK][BT]
var<workgroup> ws: array<f32, 2048>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t_total = step.t;
    let t0 = wg.y * BT;
    let r0 = wg.x * BN;
    let units = p.k / 16u;
    let k4 = p.k / 4u;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // X tile: 64 tokens × 8 vec4, two per thread.
        for (var m = 0u; m < 2u; m++) {
            let idx = lid + 256u * m;
            let tok = idx / 8u;
            let kq = idx % 8u;
            let t = t0 + tok;
            let kk = k0 + 4u * kq;
            var v = vec4<f32>(0.0);
            if (t < t_total && kk < p.k) {
                v = x[t * k4 + kk / 4u];
            }
            let o = 4u * kq * BT + tok;
            xs[o] = v.x;
            xs[o + BT] = v.y;
            xs[o + 2u * BT] = v.z;
            xs[o + 3u * BT] = v.w;
        }
        // W tile: 64 rows × 2 units.
        if (lid < 2u * BN) {
            let rr = lid % BN;
            let half = lid / BN;
            let r = r0 + rr;
            let u = k0 / 16u + half;
            var wv: array<vec4<f32>, 4>;
            if (r < p.rows && u < units) {
                wv = dequant_unit(r * p.row_bytes, u);
            }
            for (var c = 0u; c < 4u; c++) {
                let o = (16u * half + 4u * c) * BN + rr;
                ws[o] = wv[c].x;
                ws[o + BN] = wv[c].y;
                ws[o + 2u * BN] = wv[c].z;
                ws[o + 3u * BN] = wv[c].w;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * BT + li.y + 16u * i];
                b[i] = ws[kk * BN + li.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let t = t0 + li.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let r = r0 + li.x + 16u * j;
            if (t < t_total && r < p.rows) {
                let col = p.row0 + r;
                var v = acc[i][j];
                if (p.has_bias != 0u) {
                    v += bias[col];
                }
                let yi = t * p.n + col;
                if (p.accumulate != 0u) {
                    v += y[yi];
                }
                y[yi] = v;
            }
        }
    }
}
