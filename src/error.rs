//! The crate's one error type. Every variant says what went wrong and where.

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file or stream failed.
    #[error("I/O error{}: {source}", path.as_deref().map(|p| format!(" on {p}")).unwrap_or_default())]
    Io {
        path: Option<String>,
        #[source]
        source: std::io::Error,
    },
    /// A model file (GGUF, safetensors, config.json) is malformed.
    #[error("format error at {at}: {what}")]
    Format { at: String, what: String },
    /// Something valid that tandem does not implement (architecture, quant type, feature).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No adapter, device lost, a limit the adapter cannot meet, a shader that fails validation.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Building or running the tokenizer or chat template failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A conversation was given to a model that has no chat template (a base model).
    #[error("no chat template: {0}")]
    NoChatTemplate(String),
    /// The device (or the memory budget) cannot hold another model or session.
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    /// A prompt (plus the requested tokens) does not fit the context.
    #[error("context error: {0}")]
    Context(String),
    /// The drafter and the target disagree (vocabulary, tokenizer).
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// A caller passed an argument out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// The variant's name in snake case (`"gpu"`, `"context"`, …): the `kind` of the npm
    /// package's errors and the `cause` of an [`crate::api::ApiError`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Format { .. } => "format",
            Error::Unsupported(_) => "unsupported",
            Error::Gpu(_) => "gpu",
            Error::OutOfMemory(_) => "out_of_memory",
            Error::Tokenizer(_) => "tokenizer",
            Error::NoChatTemplate(_) => "no_chat_template",
            Error::Context(_) => "context",
            Error::Mismatch(_) => "mismatch",
            Error::Invalid(_) => "invalid",
        }
    }

    pub fn format(at: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Format {
            at: at.into(),
            what: what.into(),
        }
    }
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io { path: None, source }
    }
}
