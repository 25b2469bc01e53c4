//! The dashboard: server-rendered HTML (askama, every value escaped), one section per target with small SVG
//! timelines of recommended replicas and CPU/memory requests, and one expandable row per decision. Live updates
//! arrive over SSE as server-rendered fragments, so the page's script never builds HTML from data itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use ipa_core::quantity::MIB;
use serde::Serialize;

use crate::decision::{DecisionRecord, format_rfc3339};

/// Rows per target on the page.
pub const ROWS_PER_TARGET: usize = 50;
/// Points per timeline.
pub const CHART_POINTS: usize = 120;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct PageTemplate<'a> {
    provider: &'a str,
    model: &'a str,
    total: usize,
    sections: Vec<String>,
}

#[derive(Template)]
#[template(path = "target.html")]
struct TargetTemplate<'a> {
    key: &'a str,
    dom_id: &'a str,
    summary: String,
    charts: String,
    rows: Vec<String>,
}

#[derive(Template)]
#[template(path = "decision.html")]
struct RowTemplate {
    id: u64,
    time: String,
    source: &'static str,
    current: u32,
    replicas: u32,
    resources: String,
    latency: String,
    tokens: String,
    rationale: String,
    snapshot: String,
    prompt: String,
    attempts: Vec<AttemptView>,
    parsed: String,
    notes: Vec<(String, String)>,
    meta: String,
    fallback: String,
}

struct AttemptView {
    title: String,
    reply: String,
    error: String,
}

/// What `/events` sends per decision: fragments to drop into the page.
#[derive(Debug, Clone, Serialize)]
pub struct LiveUpdate {
    pub dom_id: String,
    pub target: String,
    pub total: usize,
    pub row_html: String,
    pub charts_html: String,
    pub section_html: String,
    pub decision: Arc<DecisionRecord>,
}

/// A DOM id for a target key: `t-` and the key's bytes in hex (no escaping questions).
pub fn dom_id(key: &str) -> String {
    let mut id = String::from("t-");
    for b in key.bytes() {
        let _ = write!(id, "{b:02x}");
    }
    id
}

fn render<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        String::from("<p>render error</p>")
    })
}

/// The whole page for the records (oldest first).
pub fn page(records: &[Arc<DecisionRecord>], provider: &str, model: &str) -> String {
    let mut by_target: BTreeMap<String, Vec<&Arc<DecisionRecord>>> = BTreeMap::new();
    for r in records {
        by_target.entry(r.target.to_string()).or_default().push(r);
    }
    // Most recently active target first.
    let mut targets: Vec<(String, Vec<&Arc<DecisionRecord>>)> = by_target.into_iter().collect();
    targets.sort_by_key(|(_, rs)| std::cmp::Reverse(rs.last().map_or(0, |r| r.id)));
    let sections = targets.iter().map(|(key, rs)| section(key, rs)).collect();
    render(&PageTemplate {
        provider,
        model,
        total: records.len(),
        sections,
    })
}

fn section(key: &str, records: &[&Arc<DecisionRecord>]) -> String {
    let id = dom_id(key);
    let rows = records
        .iter()
        .rev()
        .take(ROWS_PER_TARGET)
        .map(|r| row(r))
        .collect();
    render(&TargetTemplate {
        key,
        dom_id: &id,
        summary: target_summary(records),
        charts: charts(records),
        rows,
    })
}

fn target_summary(records: &[&Arc<DecisionRecord>]) -> String {
    let count = |s: ipa_core::Source| {
        records
            .iter()
            .filter(|r| r.recommendation.source == s)
            .count()
    };
    format!(
        "{} decisions · llm {} · builtin {} · fallback {}",
        records.len(),
        count(ipa_core::Source::Llm),
        count(ipa_core::Source::Builtin),
        count(ipa_core::Source::Fallback)
    )
}

/// The live update for a new record, given every record in memory (oldest first).
pub fn live_update(record: &Arc<DecisionRecord>, all: &[Arc<DecisionRecord>]) -> LiveUpdate {
    let key = record.target.to_string();
    let same: Vec<&Arc<DecisionRecord>> =
        all.iter().filter(|r| r.target == record.target).collect();
    LiveUpdate {
        dom_id: dom_id(&key),
        target: key.clone(),
        total: all.len(),
        row_html: row(record),
        charts_html: charts(&same),
        section_html: section(&key, &same),
        decision: Arc::clone(record),
    }
}

fn row(r: &DecisionRecord) -> String {
    let rec = &r.recommendation;
    let resources = rec
        .containers
        .iter()
        .map(|c| {
            let cpu = c
                .requests
                .cpu
                .map_or("-".to_string(), |v| format!("{}m", v.0));
            let mem = c.requests.memory.map_or("-".to_string(), |v| v.to_string());
            format!("{} {cpu}/{mem}", c.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let tokens = match (rec.prompt_tokens, rec.completion_tokens) {
        (None, None) => String::new(),
        (p, c) => format!("{}+{}", p.unwrap_or(0), c.unwrap_or(0)),
    };
    let attempts = r
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| AttemptView {
            title: format!("Raw reply {} ({} ms)", i + 1, a.latency_ms),
            reply: a.reply.clone().unwrap_or_else(|| "(no reply)".into()),
            error: a.error.clone().unwrap_or_default(),
        })
        .collect();
    let parsed = serde_json::to_string_pretty(rec).unwrap_or_default();
    render(&RowTemplate {
        id: r.id,
        time: format_rfc3339(r.at_ms),
        source: rec.source.as_str(),
        current: r.current_replicas,
        replicas: rec.replicas,
        resources,
        latency: rec.latency_ms.map_or("-".into(), |v| v.to_string()),
        tokens,
        rationale: rec.rationale.clone(),
        snapshot: r.snapshot_summary.clone(),
        prompt: format!("{}\n\n{}", r.prompt_system, r.prompt_user),
        attempts,
        parsed,
        notes: rec
            .notes
            .iter()
            .map(|n| (n.rule.as_str().to_string(), n.message.clone()))
            .collect(),
        meta: format!(
            "route {:?} · provider {} · model {} · source {} · latency {} ms · tokens prompt {} completion {}",
            r.route,
            r.provider,
            rec.model.as_deref().unwrap_or("-"),
            rec.source.as_str(),
            rec.latency_ms.unwrap_or(0),
            rec.prompt_tokens.map_or("-".into(), |v| v.to_string()),
            rec.completion_tokens.map_or("-".into(), |v| v.to_string()),
        ),
        fallback: r.fallback_reason.clone().unwrap_or_default(),
    })
}

/// Three small timelines: replicas, CPU request per pod (m), memory request per pod (Mi).
fn charts(records: &[&Arc<DecisionRecord>]) -> String {
    let recent = &records[records.len().saturating_sub(CHART_POINTS)..];
    let series = |f: &dyn Fn(&DecisionRecord) -> Option<f64>| -> Vec<(i64, f64)> {
        recent
            .iter()
            .filter_map(|r| f(r).map(|v| (r.at_ms, v)))
            .collect()
    };
    let replicas = series(&|r| Some(f64::from(r.recommendation.replicas)));
    let cpu = series(&|r| {
        let sum: u64 = r
            .recommendation
            .containers
            .iter()
            .filter_map(|c| c.requests.cpu)
            .map(|c| c.0)
            .sum();
        (sum > 0).then_some(sum as f64)
    });
    let mem = series(&|r| {
        let sum: u64 = r
            .recommendation
            .containers
            .iter()
            .filter_map(|c| c.requests.memory)
            .map(|c| c.0)
            .sum();
        (sum > 0).then_some(sum as f64 / MIB as f64)
    });
    let mut out = String::new();
    out.push_str(&sparkline("replicas", "", &replicas, "#2563eb"));
    out.push_str(&sparkline("cpu request / pod", "m", &cpu, "#d97706"));
    out.push_str(&sparkline("memory request / pod", "Mi", &mem, "#059669"));
    out
}

/// An inline SVG step chart. Only numbers and fixed labels go in, so the markup needs no escaping.
pub fn sparkline(label: &str, unit: &str, points: &[(i64, f64)], color: &str) -> String {
    const W: f64 = 240.0;
    const H: f64 = 64.0;
    const PAD: f64 = 4.0;
    const TOP: f64 = 16.0;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\"><title>{label}</title>\
         <text x=\"{PAD}\" y=\"11\" class=\"label\">{label}</text>"
    );
    if points.is_empty() {
        svg.push_str("<text x=\"4\" y=\"40\" class=\"none\">no data</text></svg>");
        return svg;
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let x = |t: i64| {
        if t1 == t0 {
            W - PAD - 60.0
        } else {
            PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD - 60.0)
        }
    };
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - PAD);
    let mut path = String::new();
    let mut prev_y = None;
    for (t, v) in points {
        let (px, py) = (x(*t), y(*v));
        match prev_y {
            None => {
                let _ = write!(path, "M{px:.1},{py:.1}");
            }
            Some(last) => {
                let _ = write!(path, " L{px:.1},{last:.1} L{px:.1},{py:.1}");
            }
        }
        prev_y = Some(py);
    }
    let last = points[points.len() - 1].1;
    let _ = write!(
        svg,
        "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"/>\
         <circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}{unit}</text></svg>",
        x(t1),
        y(last),
        x(t1) + 6.0,
        (y(last) + 4.0).clamp(TOP + 4.0, H - 2.0),
        format_value(last)
    );
    svg
}

fn format_value(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Route;
    use crate::engine::Attempt;
    use ipa_core::{Recommendation, Source, TargetRef};

    fn record(id: u64, hostile: &str) -> Arc<DecisionRecord> {
        let mut rec = Recommendation::new(3, Source::Llm);
        rec.rationale = hostile.into();
        Arc::new(DecisionRecord {
            id,
            at_ms: id as i64 * 60_000,
            target: TargetRef {
                namespace: "ns".into(),
                deployment: hostile.into(),
            },
            route: Route::V1,
            provider: "openai".into(),
            current_replicas: 2,
            snapshot_summary: hostile.into(),
            prompt_system: "sys".into(),
            prompt_user: hostile.into(),
            attempts: vec![Attempt {
                reply: Some(hostile.into()),
                error: Some(hostile.into()),
                latency_ms: 5,
                prompt_tokens: Some(100),
                completion_tokens: Some(20),
            }],
            recommendation: rec,
            fallback_reason: None,
        })
    }

    #[test]
    fn everything_from_the_cluster_or_the_model_is_escaped() {
        let hostile = "<script>alert(1)</script>\"'&";
        let html = page(
            &[record(1, hostile), record(2, hostile)],
            "openai",
            "<b>m</b>",
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>m</b>"));
        assert!(
            html.contains("script&#62;alert(1)") || html.contains("script&gt;alert(1)"),
            "{html}"
        );
        assert_eq!(html.matches("<details").count(), 2);
        let update = live_update(
            &record(3, hostile),
            &[record(1, hostile), record(3, hostile)],
        );
        assert!(!update.row_html.contains("<script>alert"));
        assert!(
            update
                .dom_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }

    #[test]
    fn sparkline_draws_steps() {
        let svg = sparkline(
            "replicas",
            "",
            &[(0, 1.0), (60_000, 3.0), (120_000, 2.0)],
            "#000",
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches(" L").count(), 4);
        assert!(svg.contains(">2</text>"));
        assert!(sparkline("x", "", &[], "#000").contains("no data"));
    }
}
