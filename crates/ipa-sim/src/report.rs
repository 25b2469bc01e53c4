//! The HTML report of `ipa simulate`: the score table and SVG charts (plotters, rendered to strings).

use std::path::{Path, PathBuf};

use askama::Template;
use plotters::prelude::*;

use crate::policy::SimSettings;
use crate::run::RunResult;
use crate::score::Score;
use crate::trace::Workload;

/// Points per chart line: longer runs are reduced to bucket means (while they run; see `run::RunSeries`).
pub const CHART_POINTS: usize = 1200;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot draw chart {chart}: {message}")]
    Chart { chart: String, message: String },
    #[error("cannot render the report: {0}")]
    Render(#[from] askama::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize settings: {0}")]
    Json(#[from] serde_json::Error),
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub values: Vec<f64>,
    pub color: RGBColor,
}

/// A chart in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub svg: String,
    pub caption: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    workload: &'a str,
    minutes: String,
    step_seconds: f64,
    mapping: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    charts: Vec<Chart>,
    settings: String,
}

/// Colors per policy, stable across charts.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Reduces `values` to at most `points` bucket means.
pub fn downsample(values: &[f64], points: usize) -> Vec<f64> {
    if values.len() <= points || points == 0 {
        return values.to_vec();
    }
    let bucket = values.len().div_ceil(points);
    values
        .chunks(bucket)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// Draws a line chart over time (hours) to an SVG string.
pub fn line_chart(
    title: &str,
    y_label: &str,
    step_hours: f64,
    lines: &[Line],
) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Chart {
        chart: title.to_string(),
        message: e.to_string(),
    };
    let reduced: Vec<(String, Vec<f64>, RGBColor)> = lines
        .iter()
        .map(|l| (l.name.clone(), downsample(&l.values, CHART_POINTS), l.color))
        .collect();
    let longest = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let hours = (longest as f64 * step_hours).max(step_hours);
    let y_max = reduced
        .iter()
        .flat_map(|(_, v, _)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.08;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hours, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("hours")
            .y_desc(y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        for (name, values, color) in &reduced {
            let n = values.len().max(1);
            let dx = hours / n as f64;
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(i, &v)| (i as f64 * dx, v)),
                    color.stroke_width(1),
                ))
                .map_err(|e| err(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Formats a score row for tables.
pub fn score_cells(s: &Score) -> Vec<String> {
    vec![
        s.policy.clone(),
        format!("{:.0}", s.minutes),
        format!("{:.2}", s.cpu_core_hours),
        format!("{:.2}", s.memory_gib_hours),
        s.slo_violation_minutes.to_string(),
        format!("{:.0}", s.dropped_requests),
        s.oom_kills.to_string(),
        s.restarts.to_string(),
        s.scale_actions.to_string(),
        format!("{:.3}", s.slack),
        format!("{:.2}", s.theta_u),
        format!("{:.1}", s.theta_o),
        format!("{:.2}", s.tau_u),
        format!("{:.2}", s.tau_o),
        format!("{:.2}", s.jitter),
    ]
}

pub const SCORE_HEADERS: [&str; 15] = [
    "policy",
    "minutes",
    "cpu_core_hours",
    "memory_gib_hours",
    "slo_violation_minutes",
    "dropped_requests",
    "oom_kills",
    "restarts",
    "scale_actions",
    "slack",
    "theta_u",
    "theta_o",
    "tau_u",
    "tau_o",
    "jitter",
];

/// Renders the report page for `results` (one per policy, with series) of `workload`.
pub fn render(
    workload: &Workload,
    settings: &SimSettings,
    results: &[RunResult],
) -> Result<String, ReportError> {
    let step_hours = results
        .iter()
        .find_map(|r| r.series.as_ref().map(|s| s.seconds_per_point))
        .unwrap_or(workload.step_seconds)
        / 3600.0;
    let color = |i: usize| COLORS[i % COLORS.len()];
    let per_policy = |f: &dyn Fn(&crate::run::RunSeries) -> Vec<f64>| -> Vec<Line> {
        results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.series.as_ref().map(|s| Line {
                    name: r.score.policy.clone(),
                    values: f(s),
                    color: color(i),
                })
            })
            .collect()
    };
    let mut capacity = vec![Line {
        name: "demand".to_string(),
        values: results
            .iter()
            .find_map(|r| r.series.as_ref().map(|s| s.demand_rps.clone()))
            .unwrap_or_default(),
        color: BLACK,
    }];
    capacity.extend(per_policy(&|s| s.capacity_rps.clone()));
    let charts = vec![
        Chart {
            svg: line_chart("Demand and serving capacity", "requests/s", step_hours, &capacity)?,
            caption: "Offered requests/s (black) and what each policy's ready pods could serve at their CPU caps. \
                      Capacity under demand means dropped requests; under demand/0.9 means an SLO-violation step."
                .to_string(),
        },
        Chart {
            svg: line_chart(
                "Replicas",
                "replicas",
                step_hours,
                &per_policy(&|s| s.replicas.clone()),
            )?,
            caption: "Desired replicas (spec.replicas) per policy.".to_string(),
        },
        Chart {
            svg: line_chart(
                "CPU requested",
                "cores",
                step_hours,
                &per_policy(&|s| s.cpu_requested_cores.clone()),
            )?,
            caption: "Sum of CPU requests over all pods (the cost). Rolling updates briefly add a surge pod.".to_string(),
        },
        Chart {
            svg: line_chart(
                "Memory requested",
                "GiB",
                step_hours,
                &per_policy(&|s| s.memory_requested_gib.clone()),
            )?,
            caption: "Sum of memory requests over all pods.".to_string(),
        },
    ];
    let p = &workload.provenance;
    let mapping = format!(
        "{} (scale {:.6} req/s per unit; reference value {} = {:.1} req/s; speed {}; {} gaps held, {:.0} s)",
        p.kind, p.scale, p.reference_value, p.reference_peak_rps, p.speed, p.gaps, p.gap_seconds
    );
    let page = ReportPage {
        workload: &workload.name,
        minutes: format!("{:.0}", workload.minutes()),
        step_seconds: workload.step_seconds,
        mapping,
        headers: SCORE_HEADERS.to_vec(),
        rows: results.iter().map(|r| score_cells(&r.score)).collect(),
        charts,
        settings: serde_json::to_string_pretty(&serde_json::json!({
            "settings": settings,
            "provenance": p,
        }))?,
    };
    Ok(page.render()?)
}

/// Writes `dir/index.html`.
pub fn write(dir: &Path, html: &str) -> Result<PathBuf, ReportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join("index.html");
    std::fs::write(&path, html).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppModel;
    use crate::policy::PolicyKind;
    use crate::run::run;
    use crate::trace::{Pattern, synthetic};

    #[test]
    fn downsampling_keeps_means() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(downsample(&v, 5), vec![0.5, 2.5, 4.5, 6.5, 8.5]);
        assert_eq!(downsample(&v, 20), v);
    }

    #[test]
    fn report_has_a_table_and_four_svg_charts() -> Result<(), ReportError> {
        let settings = SimSettings::default();
        let w = synthetic(Pattern::Step, 1.0, &AppModel::default());
        let results: Vec<RunResult> = [PolicyKind::Hpa, PolicyKind::Oracle]
            .into_iter()
            .map(|k| run(&w, &settings, k, true, &mut |_| {}))
            .collect();
        let html = render(&w, &settings, &results)?;
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("slo_violation_minutes"));
        assert!(html.contains("<td>oracle</td>"));
        Ok(())
    }
}
