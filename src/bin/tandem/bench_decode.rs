//! `tandem bench-decode`: prefill and plain greedy decode speed per model, with the weight
//! bytes each decoded token reads and the bandwidth that achieves (the "Decode" section of
//! BENCHMARKS.md is its output).

use std::io::{Read, Write};
use std::path::Path;

use clap::Args;
use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::gpu::{Gpu, GpuOptions};
use tandem::model::files;
use tandem::model::loader::ModelFile;
use tandem::{Error, Result};

/// Repeated until the prompt is long enough (ordinary prose, so every tokenizer splits it
/// into ordinary tokens).
const PROMPT_TEXT: &str = "The history of computing is a story of machines that got \
smaller, faster and cheaper while the problems people asked of them grew larger. Early \
computers filled rooms and needed teams of operators; today a phone holds more memory than \
all of them together. Each step came from better materials, clever circuits and new ideas \
about how programs should be written, tested and shared. ";

#[derive(Args, Debug)]
pub struct BenchDecodeArgs {
    /// Models: GGUF files or reference names (default: the reference models in the cache)
    models: Vec<String>,
    /// Prompt length in tokens (the prefill)
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to generate per model (plain greedy decoding)
    #[arg(short = 'n', long, default_value_t = 32)]
    tokens: usize,
}

/// One model's figures.
struct Row {
    name: String,
    sha: String,
    weight_bytes: u64,
    dispatches: usize,
    prompt_tokens: usize,
    prefill_tps: f64,
    decoded: usize,
    decode_tps: f64,
}

pub fn run(options: &GpuOptions, args: &BenchDecodeArgs) -> Result<()> {
    if args.prompt_tokens < 2 {
        return Err(Error::Invalid(
            "--prompt-tokens: at least 2 (one to prefill, one to start decoding)".into(),
        ));
    }
    if args.tokens < 2 {
        return Err(Error::Invalid(
            "-n: at least 2 (the first token comes from the prefill step)".into(),
        ));
    }
    let models: Vec<String> = if args.models.is_empty() {
        let present: Vec<String> = files::REFERENCE_MODELS
            .iter()
            .filter(|(short, _, _)| files::reference_path(short).is_some_and(|p| p.exists()))
            .map(|(short, _, _)| short.to_string())
            .collect();
        if present.is_empty() {
            return Err(Error::Invalid(format!(
                "no reference model is in the cache ({}): run `tandem fetch`, or name \
                 model files",
                files::models_dir().display()
            )));
        }
        present
    } else {
        args.models.clone()
    };
    // Every path resolves before the first (possibly minutes-long) model runs.
    let paths = models
        .iter()
        .map(|m| files::resolve(m))
        .collect::<Result<Vec<_>>>()?;

    let mut next_gpu = Some(Gpu::new_blocking(options)?);
    if let Some(gpu) = &next_gpu {
        let a = gpu.summary();
        println!("command: `{}`", crate::bench_kernels::command_line());
        println!();
        println!(
            "adapter: {} ({}, {}), driver: {} {}; shader-f16 enabled: {}, subgroups enabled: {}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            if gpu.has_f16() { "yes" } else { "no" },
            if gpu.has_subgroups() { "yes" } else { "no" },
        );
        println!();
    }
    println!(
        "| model (sha256) | weights read per token | dispatches per token | prompt tokens | \
         prefill tokens/s | decoded tokens | decode tokens/s | ms per token | weight GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    std::io::stdout().flush().ok();
    for path in &paths {
        // Engine::new takes the context; each model gets a fresh one.
        let gpu = match next_gpu.take() {
            Some(g) => g,
            None => Gpu::new_blocking(options)?,
        };
        let r = bench_one(gpu, path, args)?;
        println!(
            "| {} ({}…) | {:.1} MB | {} | {} | {:.2} | {} | {:.3} | {:.1} | {:.3} |",
            r.name,
            &r.sha[..r.sha.len().min(12)],
            r.weight_bytes as f64 / 1e6,
            r.dispatches,
            r.prompt_tokens,
            r.prefill_tps,
            r.decoded,
            r.decode_tps,
            1e3 / r.decode_tps.max(1e-12),
            r.weight_bytes as f64 * r.decode_tps / 1e9,
        );
        std::io::stdout().flush().ok();
    }
    Ok(())
}

fn bench_one(gpu: Gpu, path: &Path, args: &BenchDecodeArgs) -> Result<Row> {
    let file = ModelFile::open(path)?;
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let sha = if path.is_file() {
        sha256_file(path)?
    } else {
        "directory".to_string()
    };
    let weight_bytes = weight_bytes_per_token(&file);
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: args.prompt_tokens + args.tokens + 1,
            max_draft: 0,
        },
    )?;
    let ctx = engine.target.limits.max_ctx;
    if args.prompt_tokens + args.tokens > ctx {
        return Err(Error::Context(format!(
            "{name}: {} prompt + {} new tokens exceed the model's context of {ctx}",
            args.prompt_tokens, args.tokens
        )));
    }
    let prompt = prompt_ids(&engine, args.prompt_tokens)?;
    let plain = |n| GenerateOptions {
        max_tokens: n,
        stop: vec![],
        sampling: None,
        method: MethodSpec::plain(),
        adaptive: false,
        ..Default::default()
    };
    // A first, short run takes the one-time costs (shader compilation in the driver on the
    // first dispatch of each pipeline) out of the measurement.
    engine.generate(&prompt[..2], &plain(2), |_| true)?;
    engine.reset();
    let out = engine.generate(&prompt, &plain(args.tokens), |_| true)?;
    let s = &out.stats;
    // The first token comes out of the step that ends the prefill; the decode clock starts
    // after it, so the decode rate counts the tokens of the later passes only.
    let decoded = s.target_passes.saturating_sub(1);
    Ok(Row {
        name,
        sha,
        weight_bytes,
        dispatches: engine.session().dispatches(1),
        prompt_tokens: s.prompt_tokens,
        prefill_tps: s.prefill_tokens_per_s,
        decoded,
        decode_tps: decoded as f64 / s.decode_seconds.max(1e-12),
    })
}

/// Exactly `n` prompt tokens of [`PROMPT_TEXT`], repeated as needed.
fn prompt_ids(engine: &Engine, n: usize) -> Result<Vec<u32>> {
    let mut text = String::from(PROMPT_TEXT);
    loop {
        let ids = engine.tokenizer.encode(&text, false)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        if text.len() > 64 * n + PROMPT_TEXT.len() {
            return Err(Error::Tokenizer(format!(
                "{} bytes of text gave only {} tokens",
                text.len(),
                ids.len()
            )));
        }
        text.push_str(PROMPT_TEXT);
    }
}

/// Weight bytes one decode step reads: every tensor once (the output head included), except
/// an embedding table that is not also the output head, of which the gather reads one row.
fn weight_bytes_per_token(file: &ModelFile) -> u64 {
    let w = &file.weights;
    let tied = w.output == w.token_embd;
    file.tensor_list()
        .iter()
        .map(|&(name, dims, _, bytes)| {
            if name == w.token_embd && !tied {
                let rows = dims.iter().skip(1).product::<u64>().max(1);
                bytes / rows
            } else {
                bytes
            }
        })
        .sum()
}

/// SHA-256 of a file, as hex (to name the exact model file a figure came from).
fn sha256_file(path: &Path) -> Result<String> {
    let shown = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(&shown, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(&shown, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.hex())
}

/// FIPS 180-4 SHA-256 (no dependency for one checksum per benchmarked file).
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    len: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Self {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            len: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 64 {
                let block = self.block;
                self.compress(&block);
                self.filled = 0;
            }
        }
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    fn hex(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        self.state.iter().map(|v| format!("{v:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Sha256;

    fn sha(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        h.hex()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks, and a message split across update calls at odd places.
        let msg = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha(msg),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let mut h = Sha256::new();
        for part in msg.chunks(7) {
            h.update(part);
        }
        assert_eq!(
            h.hex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}
