// The gated activations act(g)·u of a gate|up pair, one element each: silu_mul.wgsl and
// gelu_mul.wgsl compute one per output, matmul.q.wgsl's GLU prologue one per component of
// each x vec4 it loads. Written once so the fused and the separate dispatch evaluate the
// same expression (`tandem::kernels::with_glu` prepends this file).

const SQRT_2_OVER_PI: f32 = 0.7978845608;
const COEF_A: f32 = 0.044715;

// SwiGLU: silu(g)·u, silu(g) = g / (1 + exp(-g)). exp(-g) overflows f32 for g < -88; WGSL
// leaves overflow undefined, so clamp: the quotient is then g / 1.65e38, i.e. 0 to f32
// precision, as it should be.
fn silu_mul(g: f32, u: f32) -> f32 {
    return g / (1.0 + exp(min(-g, 88.0))) * u;
}

// GeGLU with the tanh approximation gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) g (1 + 0.044715
// g^2))) (llama.cpp's ggml_gelu, Gemma's gelu_pytorch_tanh). tanh may be computed through
// exp, which overflows for large arguments: clamp to ±10, where tanh is ±1 to f32 precision
// anyway.
fn gelu_mul(g: f32, u: f32) -> f32 {
    let z = clamp(SQRT_2_OVER_PI * g * (1.0 + COEF_A * g * g), -10.0, 10.0);
    return 0.5 * g * (1.0 + tanh(z)) * u;
}
