//! The benchmark's outputs: a JSON file with every record, a Markdown table in Spec-Bench's
//! layout (rows = methods, columns = task groups, then τ and overall), and an SVG chart of
//! the speedup per task group per method.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::metrics::{check_lossless, summarize, MethodSummary, Metrics, Mismatch, BASELINE};
use super::questions::{group_label, task_group, TASK_GROUPS};
use super::{BenchMeta, QuestionRecord};
use tandem::{Error, Result};

/// A finished run: what it measured on, the summary, the losslessness verdict, the records.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub meta: BenchMeta,
    /// Task group keys, in column order.
    pub groups: Vec<String>,
    pub summary: Vec<MethodSummary>,
    /// Turns whose tokens differ from plain decoding's (empty: lossless).
    pub mismatches: Vec<Mismatch>,
    pub records: Vec<QuestionRecord>,
}

impl BenchReport {
    /// Summarizes `records`; methods keep their order of first appearance, groups follow
    /// Spec-Bench's column order, then other groups in order of first appearance.
    pub fn new(meta: BenchMeta, records: Vec<QuestionRecord>) -> Self {
        let mut methods: Vec<String> = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        for r in &records {
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
            let g = task_group(&r.category);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let rank = |g: &String| {
            TASK_GROUPS
                .iter()
                .position(|(key, _, _)| key == g)
                .unwrap_or(TASK_GROUPS.len())
        };
        groups.sort_by_key(rank);
        let summary = summarize(&records, &methods, &groups);
        // Sampling runs are lossless in distribution only: comparing tokens would flag
        // every method.
        let mismatches = if meta.settings.decoding == "greedy" {
            check_lossless(&records)
        } else {
            Vec::new()
        };
        BenchReport {
            meta,
            groups,
            summary,
            mismatches,
            records,
        }
    }

    /// Every (non-baseline) method's tokens equal plain decoding's for every turn.
    pub fn is_lossless(&self) -> bool {
        self.mismatches.is_empty()
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("serializing the report: {e}")))
    }

    fn header_lines(&self) -> Vec<String> {
        let m = &self.meta;
        let d = &m.device;
        let s = &m.settings;
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut v = vec![
            format!(
                "adapter: {} ({}, {}), driver: {}; shader-f16: {}, subgroups: {}",
                d.adapter,
                d.backend,
                d.device_type,
                d.driver,
                yn(d.shader_f16),
                yn(d.subgroups)
            ),
            format!(
                "target: {}, {:.1} MB",
                m.target.short(),
                m.target.bytes as f64 / 1e6
            ),
        ];
        if let Some(dr) = &m.drafter {
            v.push(format!(
                "drafter: {}, {:.1} MB{}",
                dr.short(),
                dr.bytes as f64 / 1e6,
                s.draft_vocab.map_or(String::new(), |n| format!(
                    ", drafting among the first {n} token ids"
                ))
            ));
        }
        let limit = match s.limit_per_category {
            Some(n) => format!(", at most {n} per category (evenly spread)"),
            None => String::new(),
        };
        v.push(format!(
            "questions: {}: {} questions, {} turns{limit}",
            s.questions_file, s.questions, s.question_turns
        ));
        v.push(format!(
            "decoding: {}, at most {} new tokens per turn, KV cache {} tokens, warm-up: one {}-token generation per method",
            s.decoding, s.max_new_tokens, s.ctx, s.warmup_tokens
        ));
        for mi in &s.methods {
            v.push(format!("method {}: {}", mi.name, mi.params));
        }
        if !m.command.is_empty() {
            v.push(format!("command: `{}`", m.command));
        }
        v.push(format!("tandem {}", m.tandem_version));
        v
    }

    /// One table in Spec-Bench's layout with the cell `f(metrics)` per group and overall,
    /// and τ before the overall column.
    fn speedup_table(&self, f: impl Fn(&Metrics) -> Option<f64>) -> String {
        let mut out = String::from("| Method |");
        for g in &self.groups {
            out.push_str(&format!(" {} |", group_label(g)));
        }
        out.push_str(" #Mean Accepted Tokens | Overall |\n|---|");
        for _ in 0..self.groups.len() + 2 {
            out.push_str("---:|");
        }
        out.push('\n');
        let cell = |m: Option<&Metrics>| match m.and_then(&f) {
            Some(x) => format!("{x:.2}x"),
            None => "–".to_string(),
        };
        for s in &self.summary {
            out.push_str(&format!("| {} |", s.method));
            for g in &self.groups {
                out.push_str(&format!(" {} |", cell(s.group(g))));
            }
            out.push_str(&format!(
                " {:.2} | {} |\n",
                s.overall.tau,
                cell(Some(&s.overall))
            ));
        }
        out
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("### Spec-Bench run\n\n");
        for l in self.header_lines() {
            out.push_str(&format!("- {l}\n"));
        }
        out.push_str(
            "\nSpeedup over plain decoding, decode phase (tokens/s after each turn's first \
             target pass, whose time holds the prompt's prefill; a question's speed is its \
             tokens over its time, a group's the mean over its questions, as Spec-Bench \
             averages); #Mean Accepted Tokens = generated tokens ÷ target passes (τ):\n\n",
        );
        out.push_str(&self.speedup_table(|m| m.speedup));
        out.push_str(
            "\nEnd to end (each turn's whole generation, prefill included: Spec-Bench's \
             `wall_time`):\n\n",
        );
        out.push_str(&self.speedup_table(|m| m.wall_speedup));
        out.push_str(
            "\nPer method, all questions:\n\n| Method | decode tokens/s | speedup | τ | \
             acceptance | drafter time share | end-to-end tokens/s | end-to-end speedup | new \
             tokens | target passes | drafter passes | prefill s | decode s | wall s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let x = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}x"));
        for s in &self.summary {
            let o = &s.overall;
            out.push_str(&format!(
                "| {} | {:.3} | {} | {:.2} | {} | {} | {:.3} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
                s.method,
                o.tokens_per_s,
                x(o.speedup),
                o.tau,
                o.acceptance_rate
                    .map_or("–".to_string(), |a| format!("{:.0}%", a * 100.0)),
                o.drafter_share
                    .map_or("–".to_string(), |a| format!("{:.0}%", a * 100.0)),
                o.wall_tokens_per_s,
                x(o.wall_speedup),
                o.new_tokens,
                o.target_passes,
                o.drafter_passes,
                o.prefill_seconds,
                o.decode_seconds,
                o.wall_seconds
            ));
        }
        if self.meta.settings.decoding != "greedy" {
            out.push_str(&format!(
                "\nLosslessness: not checked token for token ({}: speculative sampling keeps \
                 the target's distribution, not its exact draws).\n",
                self.meta.settings.decoding
            ));
            return out;
        }
        out.push_str("\nLosslessness (greedy: every method's tokens equal plain decoding's): ");
        let others: Vec<&str> = self
            .summary
            .iter()
            .map(|s| s.method.as_str())
            .filter(|m| *m != BASELINE)
            .collect();
        let turns = self
            .summary
            .iter()
            .find(|s| s.method == BASELINE)
            .map_or(0, |s| s.overall.turns);
        if self.mismatches.is_empty() {
            out.push_str(&format!(
                "**yes**, all {turns} turns of {} equal plain decoding token for token.\n",
                if others.is_empty() {
                    "(no other method)".to_string()
                } else {
                    others.join(", ")
                }
            ));
        } else {
            out.push_str(&format!(
                "**NO**, {} turns differ:\n\n",
                self.mismatches.len()
            ));
            for m in &self.mismatches {
                out.push_str(&format!("- {m}\n"));
            }
        }
        out
    }

    /// The SVG chart: speedup (decode phase) per task group and overall, one bar per method
    /// other than plain decoding, a line at 1×.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        draw_chart(self, &mut svg)
            .map_err(|e| Error::Invalid(format!("drawing the SVG chart: {e}")))?;
        Ok(svg)
    }

    /// Writes `specbench.json`, `specbench.md` and `specbench.svg` into `dir` (created if
    /// needed); returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let outputs = [
            ("specbench.json", self.to_json()?),
            ("specbench.md", self.to_markdown()),
            ("specbench.svg", self.to_svg()?),
        ];
        let mut paths = Vec::new();
        for (name, text) in outputs {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// Bar colours per method (after plain, which is the 1× line).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_chart(report: &BenchReport, svg: &mut String) -> DrawResult {
    let (w, h) = (960u32, 560u32);
    let bars: Vec<&MethodSummary> = report
        .summary
        .iter()
        .filter(|s| s.method != BASELINE)
        .collect();
    let mut columns: Vec<(String, Vec<Option<f64>>)> = report
        .groups
        .iter()
        .map(|g| {
            let label = group_label(g);
            let v = bars
                .iter()
                .map(|s| s.group(g).and_then(|m| m.speedup))
                .collect();
            (label, v)
        })
        .collect();
    columns.push((
        "Overall".to_string(),
        bars.iter().map(|s| s.overall.speedup).collect(),
    ));
    let top = columns
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(1.0f64, |a, &b| a.max(b));
    let y_max = (top * 1.15).max(1.2);

    let root = SVGBackend::with_string(svg, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let meta = &report.meta;
    let title = "Speedup over plain decoding (decode phase, Spec-Bench averaging)";
    let mut models = format!("target {}", meta.target.short());
    if let Some(d) = &meta.drafter {
        models.push_str(&format!("; drafter {}", d.short()));
    }
    let sub = format!(
        "{} ({}); {}, ≤ {} new tokens per turn; {} questions, {} turns",
        meta.device.adapter,
        meta.device.backend,
        meta.settings.decoding,
        meta.settings.max_new_tokens,
        meta.settings.questions,
        meta.settings.question_turns
    );
    let (head, body) = root.split_vertically(76);
    let grey = RGBColor(70, 70, 70);
    head.draw(&Text::new(title, (16, 10), ("sans-serif", 17).into_font()))?;
    head.draw(&Text::new(
        models,
        (16, 36),
        ("sans-serif", 12).into_font().color(&grey),
    ))?;
    head.draw(&Text::new(
        sub,
        (16, 54),
        ("sans-serif", 12).into_font().color(&grey),
    ))?;

    let n = columns.len() as f64;
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n, 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_labels(0)
        .y_desc("speedup (×)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;

    let slot = 0.8 / bars.len().max(1) as f64;
    for (j, s) in bars.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, (_, v))| {
                let x0 = i as f64 + 0.1 + j as f64 * slot;
                v[j].map(|y| Rectangle::new([(x0, 0.0), (x0 + slot * 0.92, y)], color.filled()))
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(format!("{} (τ {:.2})", s.method, s.overall.tau))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let values: Vec<_> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, (_, v))| {
                let x = i as f64 + 0.1 + (j as f64 + 0.46) * slot;
                v[j].map(|y| {
                    Text::new(
                        format!("{y:.2}"),
                        (x, y),
                        TextStyle::from(("sans-serif", 11).into_font())
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                })
            })
            .collect();
        chart.draw_series(values)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (n, 1.0)],
            BLACK.stroke_width(1),
        )))?
        .label("plain decoding (1×)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font(("sans-serif", 12))
        .draw()?;
    // Column names under the axis, centred on each group of bars (the mesh's own labels
    // would sit at round numbers, not at the columns).
    let label_style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, (label, _)) in columns.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(label.clone(), (px, py + 8), label_style.clone()))?;
    }
    root.present()?;
    Ok(())
}
