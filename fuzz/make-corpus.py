#!/usr/bin/env python3
"""Builds the fuzz seed corpora in fuzz/corpus/<target>/ from the real model files.

Shapes: GGUF seeds keep a model's real metadata (every key, its chat template, the first
TOKENS tokens of its vocabulary plus its special tokens, the merges among them) and its real
tensor names, with the hyper-parameters shrunk (dim 32, 2 layers) and tiny tensors that all
share one zero data block, so a seed is a few tens of KB yet passes every check of the GGUF
parser, ModelConfig and the weight map. Around those: truncated and byte-mutated copies and
hand-made hostile headers. The tokenizer seeds are `text NUL file` (the text is one of the
llama.cpp fixture texts); tokenizer.json seeds are written from the same cut vocabularies;
the chat-template seeds are `flags template NUL messages.json` with each model's own
template; the server_request seeds are raw HTTP requests to each endpoint (they need no model
file: `make-corpus.py server_request` writes only them). Why a script and not checked-in copies of model files: the reference GGUFs are
hundreds of MB, the seeds must stay a few hundred KB per target.

    python3 fuzz/make-corpus.py        # reads $TANDEM_MODELS or ~/.cache/tandem/models

Deterministic (fixed mutation seed); rerun it when the reference models change.
"""
import json
import os
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"
MODELS = Path(os.environ.get("TANDEM_MODELS", Path.home() / ".cache" / "tandem" / "models"))
TOKENS = 400  # first TOKENS tokens of each vocabulary (all 256 byte symbols are in them)
SPECIALS = 48  # and at most this many control / user-defined tokens from the rest

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# GGML type ids and (block size, bytes per block) of the types the reference models use.
F32_T, F16_T = 0, 1


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def fmt(self, f):
        (v,) = struct.unpack(f, self.take(struct.calcsize(f)))
        return v

    def string(self):
        return self.take(self.fmt("<Q")).decode("utf-8", "surrogateescape")

    def value(self, t):
        if t in SCALAR:
            return self.fmt(SCALAR[t])
        if t == STRING:
            return self.string()
        et, n = self.fmt("<I"), self.fmt("<Q")
        return (et, [self.value(et) for _ in range(n)])


def read_gguf(path):
    """(metadata {key: (type, value)}, [(name, dims, type)]) from a GGUF file's header."""
    with open(path, "rb") as f:
        head = f.read(64 << 20)  # the 1.5B's header (151k tokens + merges) is ~8 MB
    r = Reader(head)
    assert r.take(4) == b"GGUF", path
    r.fmt("<I")
    n_tensors, n_kv = r.fmt("<Q"), r.fmt("<Q")
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        t = r.fmt("<I")
        meta[k] = (t, r.value(t))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.fmt("<I")
        dims = [r.fmt("<Q") for _ in range(nd)]
        ty = r.fmt("<I")
        r.fmt("<Q")
        tensors.append((name, dims, ty))
    return meta, tensors


class Writer:
    def __init__(self):
        self.b = bytearray()

    def fmt(self, f, v):
        self.b += struct.pack(f, v)

    def string(self, s):
        raw = s.encode("utf-8", "surrogateescape")
        self.fmt("<Q", len(raw))
        self.b += raw

    def value(self, t, v):
        if t in SCALAR:
            self.fmt(SCALAR[t], v)
        elif t == STRING:
            self.string(v)
        else:
            et, items = v
            self.fmt("<I", et)
            self.fmt("<Q", len(items))
            for x in items:
                self.value(et, x)


def write_gguf(meta, tensors, alignment=32):
    """GGUF v3 bytes; every tensor points at offset 0 of one zero block as large as the
    largest tensor (the parser allows shared data, and it keeps seeds small)."""
    w = Writer()
    w.b += b"GGUF"
    w.fmt("<I", 3)
    w.fmt("<Q", len(tensors))
    w.fmt("<Q", len(meta))
    for k, (t, v) in meta.items():
        w.string(k)
        w.fmt("<I", t)
        w.value(t, v)
    largest = 0
    for name, dims, ty in tensors:
        w.string(name)
        w.fmt("<I", len(dims))
        for d in dims:
            w.fmt("<Q", d)
        w.fmt("<I", ty)
        w.fmt("<Q", 0)
        n = 1
        for d in dims:
            n *= d
        largest = max(largest, n * (4 if ty == F32_T else 2))
    while len(w.b) % alignment:
        w.b.append(0)
    w.b += bytes(largest)
    return bytes(w.b)


def cut_vocab(meta):
    """Keeps the first TOKENS tokens and every non-normal one (ids renumbered), the merges
    whose parts and result survive, and the special ids remapped."""
    _, (et, tokens) = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", (ARRAY, (I32, [1] * len(tokens))))[1][1]
    rest = [i for i in range(TOKENS, len(tokens)) if types[i] in (3, 4)][:SPECIALS]
    keep = list(range(min(TOKENS, len(tokens)))) + rest
    new_id = {old: new for new, old in enumerate(keep)}
    out = dict(meta)
    out["tokenizer.ggml.tokens"] = (ARRAY, (STRING, [tokens[i] for i in keep]))
    if "tokenizer.ggml.token_type" in meta:
        out["tokenizer.ggml.token_type"] = (ARRAY, (I32, [types[i] for i in keep]))
    for key in ("tokenizer.ggml.scores",):
        if key in meta:
            et, vals = meta[key][1]
            out[key] = (ARRAY, (et, [vals[i] for i in keep]))
    if "tokenizer.ggml.merges" in meta:
        kept = set(tokens[i] for i in keep)
        merges = []
        for m in meta["tokenizer.ggml.merges"][1][1]:
            first = len(m[:1])
            sp = m.find(" ", first)
            if sp < 0:
                continue
            a, b = m[:sp], m[sp + 1:]
            if a in kept and b in kept and a + b in kept:
                merges.append(m)
        out["tokenizer.ggml.merges"] = (ARRAY, (STRING, merges))
    for k in list(out):
        if k.startswith("tokenizer.ggml.") and k.endswith("_token_id"):
            t, v = out[k]
            if v in new_id:
                out[k] = (t, new_id[v])
            else:
                del out[k]
    return out, len(keep)


def shrink(meta, tensors, n_vocab):
    """Hyper-parameters cut to dim 32, ffn 64, 4 heads (2 kv), 2 layers; tensor dims to match."""
    arch = meta["general.architecture"][1]
    out = dict(meta)
    dim, ffn, heads, kv, hd = 32, 64, 4, 2, 8
    sizes = {"embedding_length": dim, "feed_forward_length": ffn, "block_count": 2,
             "attention.head_count": heads, "attention.head_count_kv": kv,
             "attention.key_length": hd, "attention.value_length": hd,
             "rope.dimension_count": hd, "context_length": 256}
    for k, v in sizes.items():
        key = f"{arch}.{k}"
        if key in meta or k in ("embedding_length", "feed_forward_length", "block_count",
                                "attention.head_count", "context_length"):
            out[key] = (U32, v)
    shape = {"token_embd.weight": [dim, n_vocab], "output.weight": [dim, n_vocab],
             "output_norm.weight": [dim], "attn_norm.weight": [dim], "ffn_norm.weight": [dim],
             "attn_q.weight": [dim, heads * hd], "attn_k.weight": [dim, kv * hd],
             "attn_v.weight": [dim, kv * hd], "attn_output.weight": [heads * hd, dim],
             "attn_q.bias": [heads * hd], "attn_k.bias": [kv * hd], "attn_v.bias": [kv * hd],
             "ffn_gate.weight": [dim, ffn], "ffn_up.weight": [dim, ffn],
             "ffn_down.weight": [ffn, dim], "attn_q_norm.weight": [hd],
             "attn_k_norm.weight": [hd], "rope_freqs.weight": [hd // 2]}
    new = []
    for name, dims, ty in tensors:
        parts = name.split(".")
        if parts[0] == "blk":
            if int(parts[1]) >= 2:
                continue
            key = ".".join(parts[2:])
        else:
            key = name
        d = shape.get(key, [dim])
        new.append((name, d, F32_T if len(d) == 1 else F16_T))
    return out, new


def vocab_of(meta):
    tokens = meta["tokenizer.ggml.tokens"][1][1]
    types = meta.get("tokenizer.ggml.token_type", (ARRAY, (I32, [1] * len(tokens))))[1][1]
    merges = meta.get("tokenizer.ggml.merges", (ARRAY, (STRING, [])))[1][1]
    return tokens, types, merges


GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


def tokenizer_json(meta):
    tokens, types, merges = vocab_of(meta)
    vocab = {}
    for i, t in enumerate(tokens):
        vocab[t] = i
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == 3}
             for i, t in enumerate(tokens) if types[i] in (3, 4)]
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }, ensure_ascii=False)


def tokenizer_config(meta):
    tokens = meta["tokenizer.ggml.tokens"][1][1]
    cfg = {}
    for key, name in (("bos", "bos_token"), ("eos", "eos_token"), ("padding", "pad_token")):
        k = f"tokenizer.ggml.{key}_token_id"
        if k in meta:
            cfg[name] = tokens[meta[k][1]]
    if "tokenizer.chat_template" in meta:
        cfg["chat_template"] = meta["tokenizer.chat_template"][1]
    cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", (BOOL, False))[1])
    return json.dumps(cfg, ensure_ascii=False)


# A SentencePiece-style tokenizer.json (Metaspace, byte fallback), as in tests/tokenizer.rs.
SPM_JSON = json.dumps({
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": 0, "content": "<unk>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True},
                     {"id": 1, "content": "<s>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True}],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "},
                                                   "content": "\u2581"}]},
    "pre_tokenizer": None, "post_processor": None,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ",
                                                      "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
              "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
              "byte_fallback": True, "ignore_merges": False,
              "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "\u2581": 3, "h": 4, "i": 5,
                        "\u2581h": 6, "\u2581hi": 7},
              "merges": ["\u2581 h", "\u2581h i"]},
})

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a haiku about the sea."},
     {"role": "assistant", "content": "Waves fold into foam"},
     {"role": "user", "content": "Another, in French."}],
    [{"role": "user", "content": "héllo <|im_start|> {{ not a template }}"}],
    [{"role": "user", "content": "What is the weather?"},
     {"role": "assistant", "content": "",
      "tool_calls": [{"type": "function", "function": {"name": "weather",
                                                       "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "content": "{\"temp\": 21}"}],
    [],
]

# Hostile template bodies: loops, recursion, large output; the limits must stop each one.
HOSTILE_TEMPLATES = [
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "{{ messages | tojson(indent=4) }}{{ raise_exception('no') }}",
    "{% set ns = namespace(s='ab') %}{% for m in messages %}{{ m.content.strip().upper() }}{% endfor %}",
]

TEXTS_FALLBACK = ["Hello world", " héllo\n\n  wörld 123 🦀", "<|im_start|>user\nhi<|im_end|>"]


def fixture_texts():
    texts = []
    for f in sorted((ROOT / "tests" / "fixtures").glob("tokenize-*.jsonl")):
        for line in f.read_text().splitlines()[:6]:
            texts.append(json.loads(line)["text"])
    return texts or TEXTS_FALLBACK


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def mutate(rng, data, n):
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(b)


def hostile_ggufs():
    """Headers that claim far more than they hold."""
    def head(n_tensors, n_kv):
        return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)

    def kv(key, t, payload):
        k = key.encode()
        return struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + payload

    yield "tensors-2e60", head(1 << 60, 0)
    yield "string-2e40", head(0, 1) + kv("general.name", STRING, struct.pack("<Q", 1 << 40) + b"x")
    yield "array-2e60", head(0, 1) + kv("a", ARRAY, struct.pack("<IQ", U8, 1 << 60) + b"\0" * 8)
    deep = b"".join(struct.pack("<IQ", ARRAY, 1) for _ in range(2000)) + struct.pack("<IQ", U8, 0)
    yield "nested-2000", head(0, 1) + kv("a", ARRAY, deep)
    yield "kv-2e60", head(0, 1 << 60)


def server_request_seeds():
    """Raw HTTP/1.1 requests as clients send them to `tandem serve` (the `server_request`
    target): each endpoint, streaming, constraints, ids, sampling, auth present, wrong and
    missing, and the malformed bodies the server's fault tests send."""
    def http(path, body, auth=b"Bearer sk-fuzz", method=b"POST"):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        head += b"Content-Type: application/json\r\n"
        if auth is not None:
            head += b"Authorization: " + auth + b"\r\n"
        return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    chat = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hello there"}],
            "max_tokens": 16}
    seeds = {
        "chat": http("/v1/chat/completions", chat),
        "chat-stream": http("/v1/chat/completions", {**chat, "stream": True,
                            "stream_options": {"include_usage": True}, "method": "hybrid:min_match=2"}),
        "chat-parts": http("/chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}),
        "chat-json-schema": http("/v1/chat/completions", {**chat, "response_format": {
            "type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"]}}}}),
        "chat-json-object": http("/v1/chat/completions", {**chat, "response_format": {"type": "json_object"}}),
        "chat-regex": http("/v1/chat/completions", {**chat, "regex": "[0-9]{3}-[a-z]+"}),
        "chat-grammar": http("/v1/chat/completions", {**chat, "grammar": 'start: "yes" | "no"'}),
        "chat-contrastive": http("/v1/chat/completions", {**chat, "contrastive": {"alpha": 0.1, "beta": 0.5}}),
        "chat-sampling": http("/v1/chat/completions", {**chat, "temperature": 0.7, "top_p": 0.9,
                              "top_k": 40, "seed": 7, "stop": ["\n", "END"], "n": 1}),
        "completion": http("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 8,
                           "speculative": {"n_max": 4, "n_min": 1}, "method": "lookup"}),
        "completion-ids": http("/completions", {"prompt": [1, 2, 3, 4], "n_predict": 5}),
        "completion-list": http("/v1/completions", {"prompt": ["a", "b"]}),
        "tokenize": http("/tokenize", {"content": "Hello, world!", "add_special": True, "with_pieces": True}),
        "detokenize": http("/detokenize", {"tokens": [1, 2, 3]}),
        "no-auth": http("/v1/chat/completions", chat, auth=None),
        "wrong-auth": http("/v1/chat/completions", chat, auth=b"Bearer nope"),
        "health": http("/health", b"", auth=None, method=b"GET"),
        "malformed": http("/v1/chat/completions", b'{"messages": [{"role": "user", "content": '),
        "wrong-types": http("/v1/chat/completions", {"messages": "hi", "max_tokens": "many"}),
        "negative-temperature": http("/v1/chat/completions", {**chat, "temperature": -1}),
        "unknown-method": http("/v1/chat/completions", {**chat, "method": "magic:x=1"}),
        "past-context": http("/v1/completions", {"prompt": "word " * 400}),
        "other-model": http("/v1/chat/completions", {**chat, "model": "gpt-4"}),
    }
    for name, data in seeds.items():
        put("server_request", name, data)


def main():
    rng = random.Random(17)
    models = [p for p in [MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf",
                          MODELS / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                          MODELS / "gemma-3-270m-q4_k_m.gguf",
                          ROOT / "tests" / "fixtures" / "tiny-qwen3.gguf",
                          ROOT / "tests" / "fixtures" / "tiny-llama3.gguf"] if p.exists()]
    if not models:
        sys.exit(f"no model files in {MODELS} (scripts/fetch-models.sh smollm2)")
    texts = fixture_texts()
    templates = [CHATML]
    for path in models:
        stem = path.name.removesuffix(".gguf").lower()
        meta, tensors = read_gguf(path)
        if "tokenizer.chat_template" in meta:
            templates.append(meta["tokenizer.chat_template"][1])
        cut, n_vocab = cut_vocab(meta)
        small_meta, small_tensors = shrink(cut, tensors, n_vocab)
        whole = write_gguf(small_meta, small_tensors)
        put("gguf", f"{stem}.gguf", whole)
        # Truncations (inside the metadata, inside the tensor infos) and byte mutations.
        put("gguf", f"{stem}-cut-meta", whole[: len(whole) // 8])
        if "tiny" not in stem:
            put("gguf", f"{stem}-mutated", mutate(rng, whole, 8))
        # The tokenizer target reads metadata only: no tensors.
        meta_only = write_gguf(cut, [])
        text = texts[rng.randrange(len(texts))].replace("\0", "")
        put("tokenizer_gguf", f"{stem}", text.encode() + b"\0" + meta_only)
        put("tokenizer_gguf", f"{stem}-mutated", text.encode() + b"\0" + mutate(rng, meta_only, 4))
        if cut.get("tokenizer.ggml.model", (STRING, ""))[1] == "gpt2":
            tj, tc = tokenizer_json(cut), tokenizer_config(cut)
            put("tokenizer_json", f"{stem}", text.encode() + b"\0" + tj.encode() + b"\0" + tc.encode())
            put("tokenizer_json", f"{stem}-no-config", texts[0].encode() + b"\0" + tj.encode())
    put("tokenizer_json", "sentencepiece", b"hi hi A\0" + SPM_JSON.encode())
    for name, data in hostile_ggufs():
        put("gguf", name, data)
        put("tokenizer_gguf", name, b"x\0" + data)

    for ti, t in enumerate(templates + HOSTILE_TEMPLATES):
        for ci, conv in enumerate(CONVERSATIONS):
            if ti >= len(templates) and ci:
                continue
            flags = bytes([ci % 2])  # bit 0: add_generation_prompt
            put("chat_template", f"t{ti}-c{ci}", flags + t.encode() + b"\0" + json.dumps(conv).encode())

    configs = {
        "smollm2": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                    "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
                    "rope_theta": 100000, "vocab_size": 49152, "max_position_embeddings": 8192,
                    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
                    "tie_word_embeddings": True, "rope_scaling": None},
        "qwen2.5-0.5b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                         "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                         "num_attention_heads": 14, "num_key_value_heads": 2,
                         "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": 151936,
                         "max_position_embeddings": 32768, "hidden_act": "silu",
                         "bos_token_id": 151643, "eos_token_id": [151645, 151643],
                         "use_sliding_window": False, "sliding_window": 32768,
                         "torch_dtype": "bfloat16", "_name_or_path": "Qwen/Qwen2.5-Coder-0.5B"},
    }
    for name, c in configs.items():
        put("hf_config", name, json.dumps(c, indent=2))
    put("hf_config", "missing-keys", '{"model_type": "llama", "hidden_size": 8}')
    put("hf_config", "not-json", '{"model_type": "llama", ')

    # Safetensors: a 1-layer model with tensors of the HF names, `config.json NUL shard`.
    tiny = {"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": 10,
            "max_position_embeddings": 64, "hidden_act": "silu", "eos_token_id": [2, 3]}
    specs = [("model.embed_tokens.weight", [10, 8], "F16"), ("model.norm.weight", [8], "F32"),
             ("lm_head.weight", [10, 8], "BF16")]
    for s, shape in [("input_layernorm", [8]), ("self_attn.q_proj", [8, 8]),
                     ("self_attn.k_proj", [4, 8]), ("self_attn.v_proj", [4, 8]),
                     ("self_attn.o_proj", [8, 8]), ("post_attention_layernorm", [8]),
                     ("mlp.gate_proj", [16, 8]), ("mlp.up_proj", [16, 8]),
                     ("mlp.down_proj", [8, 16])]:
        specs.append((f"model.layers.0.{s}.weight", shape, "F32" if len(shape) == 1 else "BF16"))
    for s, n in [("q_proj", 8), ("k_proj", 4), ("v_proj", 4)]:
        specs.append((f"model.layers.0.self_attn.{s}.bias", [n], "F32"))
    specs.append(("model.layers.0.self_attn.rotary_emb.inv_freq", [2], "F32"))
    header, data = {"__metadata__": {"format": "pt"}}, bytearray()
    for name, shape, dt in specs:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * (4 if dt == "F32" else 2)
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + nbytes]}
        data += bytes(rng.randrange(256) for _ in range(nbytes))
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    shard = struct.pack("<Q", len(hj)) + hj + bytes(data)
    cj = json.dumps(tiny).encode()
    put("safetensors", "tiny-qwen2", cj + b"\0" + shard)
    put("safetensors", "tiny-cut", cj + b"\0" + shard[: len(shard) // 2])
    put("safetensors", "tiny-mutated", cj + b"\0" + mutate(rng, shard, 6))
    put("safetensors", "huge-header-len", cj + b"\0" + struct.pack("<Q", 1 << 62) + b"{}")

    server_request_seeds()

    for d in sorted(OUT.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files) // 1024} KiB")


if __name__ == "__main__":
    # `make-corpus.py server_request`: only that target's seeds (they need no model files).
    if sys.argv[1:] == ["server_request"]:
        server_request_seeds()
    else:
        main()
