//! Latency: exact vs cached end-to-end time over recent queries, medians and
//! attention speedup, and where the current query's time went by stage.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::super::app::{App, HistoryItem, Panel, shadow_speedup};
use super::panel_block;
use crate::engine::{Mode, STAGES, StageReader, StageTimings};
use crate::eval::median;

/// Draws the latency panel.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel_block(app, Panel::Latency, "Latency (ms)");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [chart, summary, stages] = Layout::vertical([
        Constraint::Min(2),
        Constraint::Length(1),
        // A header line and one line per stage.
        Constraint::Length(STAGES.len() as u16 + 1),
    ])
    .areas(inner);
    draw_chart(frame, chart, app);
    frame.render_widget(Paragraph::new(summary_line(app)), summary);
    frame.render_widget(
        Paragraph::new(stage_lines(
            app,
            stages.width as usize,
            stages.height as usize,
        )),
        stages,
    );
}

/// Series of (query number, ms), oldest first.
fn series(app: &App, pick: impl Fn(&HistoryItem) -> Option<f64>) -> Vec<(f64, f64)> {
    let n = app.history.len();
    app.history
        .iter()
        .enumerate()
        .filter_map(|(i, item)| pick(item).map(|ms| ((n - 1 - i) as f64, ms)))
        .collect()
}

fn draw_chart(frame: &mut Frame, area: Rect, app: &App) {
    let exact = series(app, HistoryItem::exact_ms);
    let cached = series(app, HistoryItem::cached_ms);
    let top = exact
        .iter()
        .chain(&cached)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.1;
    let n = app.history.len().max(2) as f64;
    let datasets = vec![
        Dataset::default()
            .name("exact")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(app.theme.exact())
            .data(&exact),
        Dataset::default()
            .name("cached")
            .marker(if app.theme.color {
                Marker::Braille
            } else {
                Marker::Dot
            })
            .graph_type(GraphType::Line)
            .style(app.theme.cached())
            .data(&cached),
    ];
    let chart = Chart::new(datasets)
        .x_axis(Axis::default().bounds([0.0, n - 1.0]))
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(vec![Line::raw("0"), Line::raw(format!("{top:.0}"))]),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(100)));
    frame.render_widget(chart, area);
}

/// Medians over the recent queries that have both sides (shadow runs), or
/// over each side alone.
fn summary_line(app: &App) -> Line<'static> {
    let Some(speedup) = shadow_speedup(&app.history) else {
        let exact: Vec<f64> = app
            .history
            .iter()
            .filter_map(HistoryItem::exact_ms)
            .collect();
        return match exact.is_empty() {
            true => Line::styled("no timings yet", app.theme.dim()),
            false => Line::raw(format!(
                "median e2e exact {:.1} over {} (shadow mode compares)",
                median(&exact).unwrap_or(0.0),
                exact.len()
            )),
        };
    };
    Line::from(vec![
        Span::raw(format!("n={} median speedup ", speedup.runs)),
        Span::styled(format!("e2e {:.2}×", speedup.e2e), app.theme.cached()),
        Span::raw(format!(" · attention+look-up {:.2}×", speedup.attention)),
    ])
}

/// The current query's stages: exact and cached ms and a bar, under a
/// header when `height` leaves room for it beside every stage.
fn stage_lines(app: &App, width: usize, height: usize) -> Vec<Line<'static>> {
    let Some(item) = app.history.front() else {
        return Vec::new();
    };
    let (exact, cached) = match item.mode {
        Mode::Exact => (Some(item.timings), None),
        _ => (item.exact_timings, Some(item.timings)),
    };
    let total = exact.or(cached).map_or(1.0, |t| t.total.max(1e-9));
    let bar_width = width.saturating_sub(27);
    let fmt = |t: Option<StageTimings>, f: StageReader| {
        t.map_or("     –".to_string(), |t| format!("{:>6.2}", f(&t)))
    };
    let mut lines = Vec::new();
    if height > STAGES.len() {
        lines.push(Line::from(Span::styled(
            format!(
                "{:<10}{:>7}{:>8}  share of exact",
                "stage", "exact", "cached"
            ),
            app.theme.dim(),
        )));
    }
    for (name, f) in STAGES {
        let shown = cached.or(exact).map_or(0.0, |t| f(&t));
        let cells = ((shown / total) * bar_width as f64).round() as usize;
        lines.push(Line::from(vec![
            Span::raw(format!("{name:<10}{} {}  ", fmt(exact, f), fmt(cached, f))),
            Span::styled("█".repeat(cells.min(bar_width)), app.theme.cached()),
        ]));
    }
    lines
}
