//! Chat-template rendering of arbitrary templates and messages:
//! `flags template NUL messages.json` (flags bit 0: add_generation_prompt, bit 1: pass
//! `tools`); messages that are not JSON become one user message.
//! Invariants: no panic; every render ends (fuel, recursion limit) with output within the
//! output limit; bounded allocation. The limits are the real ones scaled down (fuel and
//! output) so that inputs that run into them stay fast; the mechanism is the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tandem::tokenizer::{ChatTemplate, TemplateLimits, TEMPLATE_LIMITS};

const LIMITS: TemplateLimits = TemplateLimits {
    fuel: 50_000,
    max_output_bytes: 1 << 20,
    ..TEMPLATE_LIMITS
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (template, messages) = tandem_fuzz::split_nul(rest);
    let template = String::from_utf8_lossy(template);
    let messages: Value = serde_json::from_slice(messages).unwrap_or_else(
        |_| json!([{"role": "user", "content": String::from_utf8_lossy(messages)}]),
    );
    let extra = if flags & 2 != 0 {
        json!({"tools": [{"type": "function", "function": {"name": "weather",
            "description": "Weather in a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]})
    } else {
        json!({})
    };
    let t = ChatTemplate::new(template, "<s>", "</s>").with_limits(LIMITS);
    if let Ok(out) = t.render_with(&messages, flags & 1 != 0, extra) {
        assert!(out.len() <= LIMITS.max_output_bytes);
    }
});
