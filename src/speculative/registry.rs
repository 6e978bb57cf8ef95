//! The one method registry: every drafting method tandem has, with its description, its
//! parameters and their defaults, and whether it needs a drafter model. A [`MethodSpec`] is
//! parsed from `name[:key=value,...]` (e.g. `tree:nodes=16,width=4`) against this table;
//! the CLI (`--method`, `tandem methods`, `--help`), `tandem bench --methods`, the wasm
//! bindings and the npm package's `method` field all read it, so no face can name a method
//! the engine lacks.

use std::fmt;
use std::str::FromStr;

use super::{
    DraftChain, Drafter, DynamicTree, Hybrid, Lookup, Plain, PromptLookup, Recycle, Suffix,
    SuffixOptions, MAX_STEP_TOKENS,
};
use crate::{Error, Result};

/// One integer parameter of a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Param {
    pub key: &'static str,
    pub default: usize,
    pub min: usize,
    pub max: usize,
    pub about: &'static str,
}

/// One row of the method table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MethodDef {
    pub name: &'static str,
    pub about: &'static str,
    pub needs_drafter_model: bool,
    pub params: &'static [Param],
}

const MAX_DRAFT: usize = MAX_STEP_TOKENS - 1;

/// Every method, plain decoding first.
pub const METHODS: &[MethodDef] = &[
    MethodDef {
        name: "plain",
        about: "plain decoding: one token per target pass (the baseline)",
        needs_drafter_model: false,
        params: &[],
    },
    MethodDef {
        name: "lookup",
        about:
            "prompt lookup (PLD/LLMA): n-gram matches in the prompt and output, merged into a trie",
        needs_drafter_model: false,
        params: &[
            Param {
                key: "len",
                default: 6,
                min: 1,
                max: MAX_DRAFT,
                about: "most draft nodes per step",
            },
            Param {
                key: "min_ngram",
                default: 1,
                min: 1,
                max: 64,
                about: "shortest suffix n-gram matched",
            },
            Param {
                key: "max_ngram",
                default: 4,
                min: 1,
                max: 64,
                about: "longest suffix n-gram matched (tried first)",
            },
            Param {
                key: "branches",
                default: 3,
                min: 1,
                max: MAX_DRAFT,
                about: "most continuations merged into one tree",
            },
        ],
    },
    MethodDef {
        name: "sps",
        about: "the drafter model's greedy chain (SpS), fused with verification in one submit",
        needs_drafter_model: true,
        params: &[Param {
            key: "len",
            default: 6,
            min: 1,
            max: MAX_DRAFT,
            about: "most chain tokens per step",
        }],
    },
    MethodDef {
        name: "tree",
        about: "the drafter model's dynamic tree (EAGLE-2 style), one small read per level",
        needs_drafter_model: true,
        params: &[
            Param {
                key: "nodes",
                default: 8,
                min: 1,
                max: MAX_DRAFT,
                about: "most tree nodes per step",
            },
            Param {
                key: "width",
                default: 4,
                min: 1,
                max: super::draft_model::TREE_WIDTH,
                about: "nodes expanded per level",
            },
        ],
    },
    MethodDef {
        name: "recycle",
        about: "Token Recycling: a best-first tree filled from a table of the target's own top-k successors",
        needs_drafter_model: false,
        params: &[
            Param {
                key: "k",
                default: 8,
                min: 1,
                max: crate::kernels::topk::MAX_K as usize,
                about: "successors kept per token (the target's top-k at each verified row)",
            },
            Param {
                key: "nodes",
                default: 16,
                min: 1,
                max: MAX_DRAFT,
                about: "most tree nodes per step",
            },
        ],
    },
    MethodDef {
        name: "suffix",
        about: "SuffixDecoding: suffix tries of this request and of earlier outputs, frequent continuations as a tree",
        needs_drafter_model: false,
        params: &[
            Param { key: "len", default: 24, min: 1, max: MAX_DRAFT, about: "most draft nodes per step" },
            Param { key: "depth", default: 24, min: 2, max: 64, about: "trie depth: match length + draft depth" },
            Param { key: "min_prob", default: 10, min: 0, max: 100, about: "least path probability of a node, in percent" },
            Param { key: "factor", default: 100, min: 1, max: 1000, about: "most nodes per matched token, in percent" },
            Param { key: "cache_requests", default: 1000, min: 1, max: 1_000_000, about: "earlier outputs kept (oldest evicted first)" },
            Param { key: "cache_nodes", default: 1 << 20, min: 1, max: 1 << 26, about: "most nodes of the earlier-outputs trie (~40 bytes each)" },
        ],
    },
    MethodDef {
        name: "hybrid",
        about: "SAM-Decoding's rule: the suffix draft on a long match, else Token Recycling's tree (model=on: else the drafter model's chain)",
        needs_drafter_model: false,
        params: &[
            Param { key: "min_match", default: 5, min: 1, max: 63, about: "shortest suffix match whose draft is taken alone" },
            Param { key: "short", default: 1, min: 0, max: 1, about: "on: a shorter match's nodes are drafted before the recycling tree" },
            Param { key: "nodes", default: 16, min: 1, max: MAX_DRAFT, about: "most draft nodes per step (suffix and recycling)" },
            Param { key: "k", default: 8, min: 1, max: crate::kernels::topk::MAX_K as usize, about: "recycling: successors kept per token" },
            Param { key: "depth", default: 24, min: 2, max: 64, about: "suffix trie depth: match length + draft depth" },
            Param { key: "model", default: 0, min: 0, max: 1, about: "on: the drafter model's chain when neither drafts (needs --drafter)" },
            Param { key: "len", default: 6, min: 1, max: MAX_DRAFT, about: "most chain tokens per step of the drafter model" },
        ],
    },
];

/// The method names, comma-separated (for messages and help).
pub fn method_names() -> String {
    METHODS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table as text: one method a line, then its parameters with their defaults.
pub fn methods_table() -> String {
    let mut s = String::new();
    for m in METHODS {
        let model = if m.needs_drafter_model {
            " [needs --drafter]"
        } else {
            ""
        };
        s.push_str(&format!("{:<8} {}{model}\n", m.name, m.about));
        for p in m.params {
            s.push_str(&format!(
                "           {}={} ({}..{}): {}\n",
                p.key, p.default, p.min, p.max, p.about
            ));
        }
    }
    s
}

/// A method with its parameter values: `name[:key=value,...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodSpec {
    def: &'static MethodDef,
    /// One value per `def.params` entry.
    values: Vec<usize>,
}

impl Default for MethodSpec {
    fn default() -> Self {
        MethodSpec::of(&METHODS[0])
    }
}

impl MethodSpec {
    fn of(def: &'static MethodDef) -> Self {
        MethodSpec {
            def,
            values: def.params.iter().map(|p| p.default).collect(),
        }
    }

    /// Plain decoding.
    pub fn plain() -> Self {
        Self::default()
    }

    /// The method `name` with its defaults.
    pub fn named(name: &str) -> Result<Self> {
        let name = name.trim().to_lowercase();
        METHODS
            .iter()
            .find(|m| m.name == name)
            .map(MethodSpec::of)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown method '{name}' (known: {})",
                    method_names()
                ))
            })
    }

    /// Parse `name[:key=value,...]`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, args) = match text.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        let mut spec = Self::named(name)?;
        for kv in args.into_iter().flat_map(|a| a.split(',')) {
            let kv = kv.trim();
            if kv.is_empty() {
                continue;
            }
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::Invalid(format!("method '{text}': '{kv}' is not key=value"))
            })?;
            let value: usize = match v.trim().to_lowercase().as_str() {
                "on" | "true" | "yes" => 1,
                "off" | "false" | "no" => 0,
                v => v.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "method '{text}': {} = '{v}' is not a whole number (or on/off)",
                        k.trim()
                    ))
                })?,
            };
            spec = spec.with(k.trim(), value)?;
        }
        spec.check()?;
        Ok(spec)
    }

    /// A comma-separated list of specs (`plain,tree:nodes=16,width=4,lookup`): a piece
    /// with `=` but no `:` continues the spec before it.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut pieces: Vec<String> = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pieces.last_mut() {
                Some(last) if p.contains('=') && !p.contains(':') => {
                    last.push(',');
                    last.push_str(p);
                }
                _ => pieces.push(p.to_string()),
            }
        }
        pieces.iter().map(|p| Self::parse(p)).collect()
    }

    /// This spec with `key` set to `value` (checked against the parameter's range).
    pub fn with(mut self, key: &str, value: usize) -> Result<Self> {
        let def = self.def;
        let i = def
            .params
            .iter()
            .position(|p| p.key == key)
            .ok_or_else(|| {
                let keys: Vec<&str> = def.params.iter().map(|p| p.key).collect();
                Error::Invalid(format!(
                    "method {} has no parameter '{key}' ({})",
                    def.name,
                    if keys.is_empty() {
                        "it takes none".to_string()
                    } else {
                        format!("it takes {}", keys.join(", "))
                    }
                ))
            })?;
        let p = &def.params[i];
        if value < p.min || value > p.max {
            return Err(Error::Invalid(format!(
                "method {}: {key} = {value} is out of range ({}..{})",
                def.name, p.min, p.max
            )));
        }
        self.values[i] = value;
        Ok(self)
    }

    fn check(&self) -> Result<()> {
        if self.def.name == "lookup" && self.get("min_ngram") > self.get("max_ngram") {
            return Err(Error::Invalid(format!(
                "method lookup: min_ngram ({}) must not exceed max_ngram ({})",
                self.get("min_ngram"),
                self.get("max_ngram")
            )));
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        self.def.name
    }

    pub fn def(&self) -> &'static MethodDef {
        self.def
    }

    /// Whether the method needs a drafter model (always, or through a switch: `hybrid:model=on`).
    pub fn needs_drafter_model(&self) -> bool {
        self.def.needs_drafter_model || (self.has("model") && self.get("model") == 1)
    }

    /// Whether the method has parameter `key`.
    pub fn has(&self, key: &str) -> bool {
        self.def.params.iter().any(|p| p.key == key)
    }

    /// The value of parameter `key` (0 when the method has no such parameter).
    pub fn get(&self, key: &str) -> usize {
        self.def
            .params
            .iter()
            .position(|p| p.key == key)
            .map_or(0, |i| self.values[i])
    }

    /// The parameters as `(key, value)`.
    pub fn params(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.def
            .params
            .iter()
            .map(|p| p.key)
            .zip(self.values.iter().copied())
    }

    /// A fresh drafter for this method.
    pub fn drafter(&self) -> Box<dyn Drafter> {
        match self.def.name {
            "lookup" => Box::new(Lookup {
                lookup: PromptLookup {
                    max_ngram: self.get("max_ngram"),
                    min_ngram: self.get("min_ngram"),
                    max_branches: self.get("branches"),
                },
                len: self.get("len"),
            }),
            "sps" => Box::new(DraftChain::new(self.get("len"))),
            "tree" => Box::new(DynamicTree::new(self.get("nodes"), self.get("width"))),
            "recycle" => Box::new(Recycle::new(self.get("k"), self.get("nodes"))),
            "suffix" => Box::new(Suffix::new(SuffixOptions {
                len: self.get("len"),
                depth: self.get("depth"),
                min_prob_percent: self.get("min_prob"),
                factor_percent: self.get("factor"),
                max_requests: self.get("cache_requests"),
                max_nodes: self.get("cache_nodes"),
            })),
            "hybrid" => Box::new(
                Hybrid::new(
                    self.get("min_match"),
                    Suffix::new(SuffixOptions {
                        len: self.get("nodes"),
                        depth: self.get("depth"),
                        ..SuffixOptions::default()
                    }),
                    Recycle::new(self.get("k"), self.get("nodes")),
                    (self.get("model") == 1).then(|| DraftChain::new(self.get("len"))),
                )
                .short_matches(self.get("short") == 1),
            ),
            _ => Box::new(Plain),
        }
    }

    /// The most draft nodes a step of this method proposes.
    pub fn max_budget(&self) -> usize {
        self.drafter().max_budget()
    }
}

impl FromStr for MethodSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MethodSpec::parse(s)
    }
}

/// `name`, then `:key=value,...` for the parameters that differ from their defaults (so a
/// spec's text parses back to it).
impl fmt::Display for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.def.name)?;
        let changed: Vec<String> = self
            .def
            .params
            .iter()
            .zip(&self.values)
            .filter(|(p, v)| p.default != **v)
            .map(|(p, v)| match (p.min, p.max) {
                (0, 1) => format!("{}={}", p.key, if *v == 1 { "on" } else { "off" }),
                _ => format!("{}={v}", p.key),
            })
            .collect();
        if !changed.is_empty() {
            write!(f, ":{}", changed.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_parameters_and_round_trips() {
        let t = MethodSpec::parse("tree:nodes=16,width=2").unwrap();
        assert_eq!((t.name(), t.get("nodes"), t.get("width")), ("tree", 16, 2));
        assert_eq!(t.to_string(), "tree:nodes=16,width=2");
        assert_eq!(MethodSpec::parse(&t.to_string()).unwrap(), t);
        let s = MethodSpec::parse("sps").unwrap();
        assert_eq!((s.get("len"), s.to_string().as_str()), (6, "sps"));
        assert!(s.needs_drafter_model() && !MethodSpec::plain().needs_drafter_model());
        let h = MethodSpec::parse("hybrid:model=on").unwrap();
        assert!(
            h.needs_drafter_model() && !MethodSpec::parse("hybrid").unwrap().needs_drafter_model()
        );
        assert_eq!(h.to_string(), "hybrid:model=on");
        assert_eq!(MethodSpec::parse("hybrid:model=1").unwrap(), h);
        assert_eq!(MethodSpec::parse("tree:nodes=16").unwrap().max_budget(), 16);
        for m in METHODS {
            let spec = MethodSpec::named(m.name).unwrap();
            assert_eq!(MethodSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let msg = |s: &str| MethodSpec::parse(s).unwrap_err().to_string();
        assert!(
            msg("medusa").contains("unknown method 'medusa'"),
            "{}",
            msg("medusa")
        );
        assert!(msg("medusa").contains("plain, lookup, sps, tree"));
        assert!(msg("tree:depth=3").contains("no parameter 'depth'"));
        assert!(msg("tree:depth=3").contains("nodes, width"));
        assert!(msg("plain:len=3").contains("takes none"));
        assert!(msg("sps:len=x").contains("not a whole number"));
        assert!(msg("hybrid:model=2").contains("out of range"));
        assert!(msg("sps:len=0").contains("out of range"));
        assert!(msg("tree:width=9").contains("out of range"));
        assert!(msg("sps:len").contains("not key=value"));
        assert!(msg("lookup:min_ngram=5").contains("must not exceed"));
    }

    #[test]
    fn lists_split_between_specs_not_inside_them() {
        let l = MethodSpec::parse_list("plain, tree:nodes=16,width=2,lookup,sps:len=3").unwrap();
        let names: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["plain", "tree:nodes=16,width=2", "lookup", "sps:len=3"]
        );
        assert!(MethodSpec::parse_list("plain,nodes=3").is_err());
    }
}
