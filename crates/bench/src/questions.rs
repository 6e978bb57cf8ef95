//! Spec-Bench question files (JSONL: one `{"question_id", "category", "turns"}` object a line),
//! the task groups Spec-Bench reports, and the evenly spread sample `--limit-per-category`
//! takes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use tandem::{Error, Result};

/// One benchmark question: a conversation of user turns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Question {
    /// The file's `question_id` (a number in Spec-Bench; a string is accepted too).
    pub id: String,
    pub category: String,
    /// User turns, answered in order; each later turn sees the earlier answers.
    pub turns: Vec<String>,
    /// 1-based line of the question in its file.
    pub line: usize,
}

/// Other fields (MT-bench's `reference` answers) are ignored.
#[derive(Deserialize)]
struct RawQuestion {
    question_id: serde_json::Value,
    category: String,
    turns: Vec<String>,
}

/// Parses a question file. `source` names it in errors, which say the line number:
/// `questions.jsonl:12`. Blank lines are skipped; an empty file is an error.
pub fn parse_questions(text: &str, source: &str) -> Result<Vec<Question>> {
    let mut out: Vec<Question> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let at = || format!("{source}:{line_no}");
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let raw: RawQuestion = serde_json::from_str(line).map_err(|e| {
            // serde_json's own "at line 1 column N" is the column inside this line.
            Error::format(at(), format!("not a Spec-Bench question object: {e}"))
        })?;
        let id = match &raw.question_id {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            other => {
                return Err(Error::format(
                    at(),
                    format!("question_id must be a number or a non-empty string, not {other}"),
                ))
            }
        };
        if raw.category.trim().is_empty() {
            return Err(Error::format(at(), "category is empty"));
        }
        if raw.turns.is_empty() {
            return Err(Error::format(
                at(),
                format!("question {id} has no turns (\"turns\": [])"),
            ));
        }
        if let Some(t) = raw.turns.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::format(
                at(),
                format!("question {id}: turn {} is empty", t + 1),
            ));
        }
        if let Some(first) = seen.insert(id.clone(), line_no) {
            return Err(Error::format(
                at(),
                format!("question_id {id} already appears on line {first}"),
            ));
        }
        out.push(Question {
            id,
            category: raw.category,
            turns: raw.turns,
            line: line_no,
        });
    }
    if out.is_empty() {
        return Err(Error::format(
            source,
            "the question file holds no questions",
        ));
    }
    Ok(out)
}

/// Reads and parses a question file.
pub fn load_questions(path: &std::path::Path) -> Result<Vec<Question>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(shown.clone(), e))?;
    parse_questions(&text, &shown)
}

/// Spec-Bench's task groups, in its column order: (key, column label, categories).
pub const TASK_GROUPS: &[(&str, &str, &[&str])] = &[
    (
        "mt_bench",
        "Multi-turn Conversation",
        &[
            "writing",
            "roleplay",
            "reasoning",
            "math",
            "coding",
            "extraction",
            "stem",
            "humanities",
        ],
    ),
    ("translation", "Translation", &["translation"]),
    ("summarization", "Summarization", &["summarization"]),
    ("qa", "Question Answering", &["qa"]),
    (
        "math_reasoning",
        "Mathematical Reasoning",
        &["math_reasoning"],
    ),
    ("rag", "Retrieval-aug. Generation", &["rag"]),
];

/// The task group of a category: Spec-Bench's group key, or the category itself for a
/// category Spec-Bench does not have (other question files form their own columns).
pub fn task_group(category: &str) -> String {
    TASK_GROUPS
        .iter()
        .find(|(_, _, cats)| cats.contains(&category))
        .map(|(key, _, _)| key.to_string())
        .unwrap_or_else(|| category.to_string())
}

/// A group's column label.
pub fn group_label(group: &str) -> String {
    TASK_GROUPS
        .iter()
        .find(|(key, _, _)| *key == group)
        .map(|(_, label, _)| label.to_string())
        .unwrap_or_else(|| group.to_string())
}

/// The groups present in `questions`, Spec-Bench's first (in its order), then the others in
/// order of first appearance.
pub fn groups_of(questions: &[Question]) -> Vec<String> {
    let mut present: Vec<String> = Vec::new();
    for q in questions {
        let g = task_group(&q.category);
        if !present.contains(&g) {
            present.push(g);
        }
    }
    let rank = |g: &String| {
        TASK_GROUPS
            .iter()
            .position(|(key, _, _)| key == g)
            .unwrap_or(TASK_GROUPS.len())
    };
    // Stable: unknown groups keep their order of appearance.
    present.sort_by_key(rank);
    present
}

/// At most `n` questions of each category, spread evenly over the category's questions in
/// file order (the middle of each of `n` equal slices), so a small sample does not only see
/// the first few. The result keeps file order. `None` keeps everything.
pub fn sample_per_category(questions: &[Question], n: Option<usize>) -> Result<Vec<Question>> {
    let Some(n) = n else {
        return Ok(questions.to_vec());
    };
    if n == 0 {
        return Err(Error::Invalid(
            "--limit-per-category must be at least 1".into(),
        ));
    }
    let mut by_cat: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        match by_cat.iter_mut().find(|(c, _)| *c == q.category) {
            Some((_, v)) => v.push(i),
            None => by_cat.push((&q.category, vec![i])),
        }
    }
    let mut keep: Vec<usize> = Vec::new();
    for (_, idx) in &by_cat {
        keep.extend(even_indices(idx.len(), n).into_iter().map(|j| idx[j]));
    }
    keep.sort_unstable();
    Ok(keep.into_iter().map(|i| questions[i].clone()).collect())
}

/// `min(k, len)` indices into `0..len`, the middle of each of `k` equal slices.
pub fn even_indices(len: usize, k: usize) -> Vec<usize> {
    if k >= len {
        return (0..len).collect();
    }
    (0..k).map(|i| (2 * i + 1) * len / (2 * k)).collect()
}
