# gemma3_f64_reference.py: an independent float64 NumPy forward of Gemma 3 (written from
# llama.cpp's llm_build_gemma3 with sliding-window layers, not from tandem's code), with the
# `gguf` Python package's dequantizers. It gives the reference log-probabilities of
# tests/cpu_forward.rs::gemma3_first_token_logprobs_equal_an_f64_reference_and_near_llama_cpp.
#
#   python3 scripts/gemma3_f64_reference.py MODEL.gguf '[2, 818, 5279, 529, 7001, 563]' [q8]
#
# prints the top-5 [token id, log-probability] of the token after the prompt ids (all
# positions in one batch; shapes: x [T, dim], q [T, heads, head_dim], k/v [T, kv heads,
# head_dim]). With `q8`, activations are rounded to Q8_0 blocks before every matmul, roughly
# what llama.cpp's CPU backend does, to show how much that moves the log-probabilities.
import sys, json, math
import numpy as np
import gguf
from gguf.quants import dequantize

path = sys.argv[1]
prompt_ids = json.loads(sys.argv[2])
q8 = len(sys.argv) > 3 and sys.argv[3] == "q8"
r = gguf.GGUFReader(path)
f = {k: v for k, v in r.fields.items()}
def val(k):
    return f[k].contents()
T = {t.name: t for t in r.tensors}
def W(name):
    t = T[name]
    a = dequantize(t.data, t.tensor_type).astype(np.float64)
    return a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a

n_layer = int(val("gemma3.block_count"))
d = int(val("gemma3.embedding_length"))
nh = int(val("gemma3.attention.head_count"))
nkv = int(val("gemma3.attention.head_count_kv"))
hd = int(val("gemma3.attention.key_length"))
eps = float(val("gemma3.attention.layer_norm_rms_epsilon"))
theta_g = float(val("gemma3.rope.freq_base"))
window = int(val("gemma3.attention.sliding_window"))
theta_l = 10000.0

def rms(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

def q8_0(x):
    # llama.cpp's CPU backend quantizes activations to Q8_0 blocks of 32 for these matmuls
    x = x.reshape(-1, 32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    dd = (amax / 127.0).astype(np.float16).astype(np.float64)
    id_ = np.where(dd > 0, 1.0 / np.where(dd > 0, dd, 1), 0)
    q = np.round(x * id_)
    return (q * dd).reshape(-1)

def mm(name, x):
    w = W(name)
    if q8:
        x = np.stack([q8_0(row) for row in np.atleast_2d(x)])
    return x @ w.T

def rope(x, pos, theta):
    # neox: pairs (i, i + hd/2); x [T, heads, hd]
    half = hd // 2
    inv = theta ** (-np.arange(half) * 2.0 / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * x * (1 + 0.044715 * x * x)))

ids = np.array(prompt_ids)
n = len(ids)
emb = W("token_embd.weight")
x = emb[ids] * np.float64(np.float32(math.sqrt(d)))
pos = np.arange(n, dtype=np.float64)
for il in range(n_layer):
    p = f"blk.{il}."
    swa = il % 6 < 5
    h = rms(x, W(p + "attn_norm.weight"))
    q = mm(p + "attn_q.weight", h).reshape(n, nh, hd)
    k = mm(p + "attn_k.weight", h).reshape(n, nkv, hd)
    v = mm(p + "attn_v.weight", h).reshape(n, nkv, hd)
    q = rms(q, W(p + "attn_q_norm.weight"))
    k = rms(k, W(p + "attn_k_norm.weight"))
    th = theta_l if swa else theta_g
    q = rope(q, pos, th) * (1.0 / math.sqrt(hd))
    k = rope(k, pos, th)
    out = np.zeros((n, nh, hd))
    for hh in range(nh):
        kv = hh // (nh // nkv)
        s = q[:, hh, :] @ k[:, kv, :].T
        i_, j_ = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        allowed = (j_ <= i_) & ((~np.bool_(swa)) | (i_ - j_ < window))
        s = np.where(allowed, s, -np.inf)
        s = s - s.max(axis=1, keepdims=True)
        pr = np.exp(s); pr /= pr.sum(axis=1, keepdims=True)
        out[:, hh, :] = pr @ v[:, kv, :]
    a = mm(p + "attn_output.weight", out.reshape(n, nh * hd))
    a = rms(a, W(p + "post_attention_norm.weight"))
    x = x + a
    h = rms(x, W(p + "ffn_norm.weight"))
    g = mm(p + "ffn_gate.weight", h)
    u = mm(p + "ffn_up.weight", h)
    dn = mm(p + "ffn_down.weight", gelu(g) * u)
    dn = rms(dn, W(p + "post_ffw_norm.weight"))
    x = x + dn
h = rms(x[-1:], W("output_norm.weight"))
logits = mm("token_embd.weight", h)[0]
m = logits.max()
lse = m + np.log(np.exp(logits - m).sum())
top = np.argsort(-logits)[:5]
print(json.dumps([[int(t), round(float(logits[t] - lse), 5)] for t in top]))
