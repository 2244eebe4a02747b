//! Line charts and bars: the threshold sweep with its frontier, and latency
//! distributions with the cached path's stage breakdown.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use super::font::FAMILY;
use super::palette::{CACHED, EXACT, GREEN, ORACLE, OURS, PAPER, STAGES};
use super::{Figure, err};

/// One evaluated setting of a policy's knob.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The knob (threshold scale or distance).
    pub knob: f64,
    /// The policy's name.
    pub policy: String,
    /// Share of heads reused.
    pub hit_rate: f64,
    /// Probe accuracy, exact (fraction).
    pub accuracy_exact: Option<f64>,
    /// Probe accuracy, cached (fraction).
    pub accuracy_cached: Option<f64>,
    /// Mean output fidelity.
    pub fidelity_mean: f64,
    /// End-to-end speedup (look-up included).
    pub e2e_speedup: f64,
    /// Attention speedup (look-up included).
    pub attention_speedup: f64,
}

impl SweepPoint {
    /// Accuracy loss in points, or 100·(1 − fidelity) without labels.
    pub fn loss(&self) -> f64 {
        match (self.accuracy_exact, self.accuracy_cached) {
            (Some(e), Some(c)) => (e - c) * 100.0,
            _ => (1.0 - self.fidelity_mean) * 100.0,
        }
    }
}

/// Hit rate, accuracy, fidelity and speedup against the knob, and the
/// frontiers of our policy and the paper's.
#[derive(Debug, Clone)]
pub struct SweepFigure {
    /// Title.
    pub title: String,
    /// What the knob is (with unit).
    pub knob_desc: String,
    /// Our policy at each knob setting.
    pub ours: Vec<SweepPoint>,
    /// The paper's policy at each distance.
    pub paper: Vec<SweepPoint>,
    /// The oracle (the limit of any map cache) along its least similarity;
    /// drawn in the frontiers when not empty.
    pub oracle: Vec<SweepPoint>,
    /// The chosen operating point (ours at the calibrated setting).
    pub chosen: Option<SweepPoint>,
}

/// The (min, max) of `values`, widened when flat.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One line chart panel: named series of (x, y) and an optional marked point.
struct Panel<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    series: Vec<Series<'a>>,
    marked: Vec<(f64, f64)>,
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> anyhow::Result<()> {
    let xs = p.series.iter().flat_map(|s| s.2.iter().map(|q| q.0));
    let ys = p.series.iter().flat_map(|s| s.2.iter().map(|q| q.1));
    let (x0, x1) = span(xs.chain(p.marked.iter().map(|q| q.0)));
    let (y0, y1) = span(ys.chain(p.marked.iter().map(|q| q.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, (FAMILY, 18))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .label_style((FAMILY, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (name, color, points) in p.series.iter().filter(|s| !s.2.is_empty()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&q| Circle::new(q, 4, color.filled())))
            .map_err(err)?;
    }
    if !p.marked.is_empty() {
        chart
            .draw_series(
                p.marked
                    .iter()
                    .map(|&q| Cross::new(q, 9, BLACK.stroke_width(3))),
            )
            .map_err(err)?
            .label("chosen")
            .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FAMILY, 12))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

impl Figure for SweepFigure {
    fn size(&self) -> (u32, u32) {
        (1400, 1500)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let area = area.titled(&self.title, (FAMILY, 24)).map_err(err)?;
        let cells = area.split_evenly((3, 2));
        let along = |f: fn(&SweepPoint) -> Option<f64>| -> Vec<(f64, f64)> {
            self.ours
                .iter()
                .filter_map(|p| f(p).map(|y| (p.knob, y)))
                .collect()
        };
        let mark = |f: fn(&SweepPoint) -> Option<f64>| -> Vec<(f64, f64)> {
            self.chosen
                .iter()
                .filter_map(|p| f(p).map(|y| (p.knob, y)))
                .collect()
        };
        let labelled = self.ours.iter().any(|p| p.accuracy_exact.is_some());
        let loss_desc = if labelled {
            "accuracy loss (points)"
        } else {
            "1 − fidelity (%)"
        };
        let panels = [
            Panel {
                title: "Hit rate",
                x_desc: &self.knob_desc,
                y_desc: "heads reused (%)",
                series: vec![("ours", OURS, along(|p| Some(p.hit_rate * 100.0)))],
                marked: mark(|p| Some(p.hit_rate * 100.0)),
            },
            Panel {
                title: "Accuracy (probe on the sentence embedding)",
                x_desc: &self.knob_desc,
                y_desc: "accuracy (%)",
                series: vec![
                    (
                        "exact",
                        EXACT,
                        along(|p| p.accuracy_exact.map(|v| v * 100.0)),
                    ),
                    (
                        "cached",
                        CACHED,
                        along(|p| p.accuracy_cached.map(|v| v * 100.0)),
                    ),
                ],
                marked: mark(|p| p.accuracy_cached.map(|v| v * 100.0)),
            },
            Panel {
                title: "Output fidelity",
                x_desc: &self.knob_desc,
                y_desc: "mean cosine to exact embedding",
                series: vec![("ours", OURS, along(|p| Some(p.fidelity_mean)))],
                marked: mark(|p| Some(p.fidelity_mean)),
            },
            Panel {
                title: "Speedup over all queries, look-up counted",
                x_desc: &self.knob_desc,
                y_desc: "exact time / cached time (×)",
                series: vec![
                    ("end to end", OURS, along(|p| Some(p.e2e_speedup))),
                    ("attention", GREEN, along(|p| Some(p.attention_speedup))),
                ],
                marked: mark(|p| Some(p.e2e_speedup)),
            },
            Panel {
                title: "Frontier: loss vs end-to-end speedup",
                x_desc: "end-to-end speedup (×)",
                y_desc: loss_desc,
                series: vec![
                    (
                        "ours (per head)",
                        OURS,
                        frontier(&self.ours, |p| p.e2e_speedup),
                    ),
                    (
                        "paper (all or nothing)",
                        PAPER,
                        frontier(&self.paper, |p| p.e2e_speedup),
                    ),
                    (
                        "oracle (limit of any map cache)",
                        ORACLE,
                        frontier(&self.oracle, |p| p.e2e_speedup),
                    ),
                ],
                marked: self
                    .chosen
                    .iter()
                    .map(|p| (p.e2e_speedup, p.loss()))
                    .collect(),
            },
            Panel {
                title: "Frontier: loss vs hit rate",
                x_desc: "heads reused (%)",
                y_desc: loss_desc,
                series: vec![
                    (
                        "ours (per head)",
                        OURS,
                        frontier(&self.ours, |p| p.hit_rate * 100.0),
                    ),
                    (
                        "paper (all or nothing)",
                        PAPER,
                        frontier(&self.paper, |p| p.hit_rate * 100.0),
                    ),
                    (
                        "oracle (limit of any map cache)",
                        ORACLE,
                        frontier(&self.oracle, |p| p.hit_rate * 100.0),
                    ),
                ],
                marked: self
                    .chosen
                    .iter()
                    .map(|p| (p.hit_rate * 100.0, p.loss()))
                    .collect(),
            },
        ];
        for (panel, cell) in panels.iter().zip(cells.iter()) {
            draw_panel(cell, panel)?;
        }
        Ok(())
    }
}

/// (x, loss) of every point, sorted by x.
fn frontier(points: &[SweepPoint], x: fn(&SweepPoint) -> f64) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points.iter().map(|p| (x(p), p.loss())).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Latency distributions of exact and cached runs, and where each spends
/// its time.
#[derive(Debug, Clone)]
pub struct LatencyFigure {
    /// Title.
    pub title: String,
    /// End-to-end ms of exact runs, one per query run.
    pub exact_e2e: Vec<f64>,
    /// End-to-end ms of cached runs.
    pub cached_e2e: Vec<f64>,
    /// Attention ms of exact runs.
    pub exact_attention: Vec<f64>,
    /// Attention ms of cached runs, look-up and map loading included.
    pub cached_attention: Vec<f64>,
    /// Mean ms per stage: (name, exact, cached).
    pub stages: Vec<(String, f64, f64)>,
}

/// Draws two overlaid histograms.
fn draw_histograms<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    exact: &[f64],
    cached: &[f64],
) -> anyhow::Result<()> {
    let (lo, hi) = span(exact.iter().chain(cached).copied());
    let lo = lo.max(0.0);
    let bins = 30usize;
    let width = (hi - lo) / bins as f64;
    let count = |v: &[f64]| {
        let mut c = vec![0usize; bins];
        for &x in v {
            c[(((x - lo) / width) as usize).min(bins - 1)] += 1;
        }
        c
    };
    let (ce, cc) = (count(exact), count(cached));
    let top = ce.iter().chain(&cc).copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 18))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time per query (ms)")
        .y_desc("query runs")
        .label_style((FAMILY, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (name, color, counts) in [("exact", EXACT, &ce), ("cached", CACHED, &cc)] {
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width, c as f64)],
                    color.mix(0.55).filled(),
                )
            }))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FAMILY, 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

impl Figure for LatencyFigure {
    fn size(&self) -> (u32, u32) {
        (1500, 560)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let area = area.titled(&self.title, (FAMILY, 24)).map_err(err)?;
        let cells = area.split_evenly((1, 3));
        draw_histograms(&cells[0], "End to end", &self.exact_e2e, &self.cached_e2e)?;
        draw_histograms(
            &cells[1],
            "Attention (cached: + look-up, map loading)",
            &self.exact_attention,
            &self.cached_attention,
        )?;
        let total =
            |pick: fn(&(String, f64, f64)) -> f64| self.stages.iter().map(pick).sum::<f64>();
        let top = total(|s| s.1).max(total(|s| s.2)).max(1e-6) * 1.25;
        let mut chart = ChartBuilder::on(&cells[2])
            .caption("Where the time goes (mean per query)", (FAMILY, 18))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..2f64, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(5)
            .x_label_formatter(&|&x| match x {
                x if (x - 0.5).abs() < 0.1 => "exact".into(),
                x if (x - 1.5).abs() < 0.1 => "cached".into(),
                _ => String::new(),
            })
            .y_desc("time per query (ms)")
            .label_style((FAMILY, 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let (mut exact_base, mut cached_base) = (0.0, 0.0);
        for (i, (name, exact, cached)) in self.stages.iter().enumerate() {
            let color = STAGES[i % STAGES.len()];
            chart
                .draw_series([
                    Rectangle::new(
                        [(0.15, exact_base), (0.85, exact_base + exact)],
                        color.filled(),
                    ),
                    Rectangle::new(
                        [(1.15, cached_base), (1.85, cached_base + cached)],
                        color.filled(),
                    ),
                ])
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
            exact_base += exact;
            cached_base += cached;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}
