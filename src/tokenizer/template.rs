//! Chat templates: the model's own Jinja template rendered with `minijinja` the way HF
//! `transformers` renders it, under [`TemplateLimits`] (the template comes from the model file
//! and is untrusted), with ChatML as the fallback format.

use serde::Serialize;

use super::tok_err;
use crate::Result;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The ChatML format, used for models without a template (llama.cpp does the same).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A Jinja chat template as HF `transformers` renders it: `trim_blocks` and `lstrip_blocks` on,
/// `bos_token`/`eos_token` variables, `raise_exception(msg)`, Python string methods
/// (`.strip()`, `.startswith()`, …) and a `tojson` that writes like Python's `json.dumps`.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    limits: TemplateLimits,
}

impl ChatTemplate {
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Self {
        ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            limits: TEMPLATE_LIMITS,
        }
    }

    /// Other limits than [`TEMPLATE_LIMITS`] (the fuzz target uses smaller ones to run fast).
    pub fn with_limits(mut self, limits: TemplateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the fallback for template-less models.
    pub fn chatml() -> Self {
        Self::new(CHATML_TEMPLATE, "", "")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (any serializable list of `{role, content, ...}` objects).
    pub fn render<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with(messages, add_generation_prompt, minijinja::Value::UNDEFINED)
    }

    /// Renders with extra variables (e.g. `tools`), given as a map-like serializable value.
    ///
    /// The template comes from the model file, so it is untrusted: rendering runs under
    /// its [`TemplateLimits`] (source size, fuel, recursion depth, output size; by default
    /// [`TEMPLATE_LIMITS`]) and past any of them fails with an error that names the limit.
    pub fn render_with<M: Serialize + ?Sized, E: Serialize>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
        extra: E,
    ) -> Result<String> {
        let limits = self.limits;
        if self.source.len() > limits.max_source_bytes {
            return Err(tok_err(format!(
                "the chat template is {} bytes, more than the limit of {} bytes",
                self.source.len(),
                limits.max_source_bytes
            )));
        }
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.max_recursion);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        let max_indent = limits.max_json_indent;
        env.add_filter("tojson", move |v, kwargs| tojson(v, kwargs, max_indent));
        env.add_template("chat_template", &self.source)
            .map_err(|e| {
                tok_err(format!(
                    "chat template does not parse: {}",
                    describe_jinja(&e)
                ))
            })?;
        let tmpl = env
            .get_template("chat_template")
            .map_err(|e| tok_err(format!("chat template: {}", describe_jinja(&e))))?;
        let base = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        // The template's own variables win over same-named extras.
        let ctx = minijinja::value::merge_maps([base, minijinja::Value::from_serialize(&extra)]);
        let mut out = CappedOutput {
            bytes: Vec::new(),
            cap: limits.max_output_bytes,
            overflowed: false,
        };
        let rendered = tmpl.render_captured_to(ctx, &mut out);
        if out.overflowed {
            return Err(tok_err(format!(
                "the chat template's output exceeds the limit of {} bytes",
                limits.max_output_bytes
            )));
        }
        match rendered {
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(tok_err(format!(
                "the chat template ran out of fuel: it did not finish within {} steps (a loop that does not end?)",
                limits.fuel
            ))),
            Err(e) => Err(tok_err(format!(
                "rendering the chat template: {}",
                describe_jinja(&e)
            ))),
            // minijinja writes whole `str`s and CappedOutput refuses whole writes.
            Ok(_) => String::from_utf8(out.bytes)
                .map_err(|e| tok_err(format!("the chat template's output is not UTF-8: {e}"))),
        }
    }
}

/// What a chat template may make tandem do. Real templates render a long conversation with
/// tools in well under 1% of each limit; hostile ones (a loop that never ends, recursion
/// without a base case, gigabytes of output) stop at the first limit they reach.
#[derive(Clone, Copy, Debug)]
pub struct TemplateLimits {
    /// Bytes of template source (real ones are under 20 KB).
    pub max_source_bytes: usize,
    /// minijinja instructions per render (one unit each).
    pub fuel: u64,
    /// Nesting of macro calls, includes and blocks at run time (minijinja's own cap is 500).
    pub max_recursion: usize,
    /// Bytes of rendered prompt: more than any context window holds as text.
    pub max_output_bytes: usize,
    /// Largest `indent` of the `tojson` filter.
    pub max_json_indent: usize,
}

/// The limits every chat-template render runs under (see RELIABILITY.md).
pub const TEMPLATE_LIMITS: TemplateLimits = TemplateLimits {
    max_source_bytes: 1 << 20,
    fuel: 2_000_000,
    max_recursion: 64,
    max_output_bytes: 16 << 20,
    max_json_indent: 64,
};

/// A render target that refuses any write that would take it past `cap` bytes.
struct CappedOutput {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe_jinja(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> std::result::Result<minijinja::Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("the template raised an exception: {msg}"),
    ))
}

/// `json.dumps` separators: `", "` between items and `": "` after keys (minijinja's own `tojson`
/// is compact and HTML-escapes, which changes tool-calling prompts).
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
    max_indent: usize,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    if let Some(n) = indent.filter(|&n| n > max_indent) {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: indent {n} is larger than the limit of {max_indent}"),
        ));
    }
    let mut out = Vec::new();
    let res = match indent {
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, PythonJson,
        )),
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
    };
    res.map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: {e}"),
        )
    })?;
    let s = String::from_utf8(out).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: {e}"),
        )
    })?;
    Ok(minijinja::Value::from_safe_string(s))
}
