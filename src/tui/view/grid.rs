//! The layer × head grid: one cell per head, shaded by similarity (true in
//! shadow mode, predicted otherwise), a glyph for hit or miss — for this
//! query, or (`v`) over the stream so far: mean true similarity and hit
//! rate per head.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, GridView, Overlay, Panel};
use super::super::theme::{HIT, MISS, shade};
use super::panel_block;
use crate::engine::{LayerTrace, Mode};

/// Rows the grid wants in a column of `available` rows: header, one per
/// layer, legend and borders, at most half the column (it scrolls).
pub fn height(app: &App, available: u16) -> u16 {
    let wanted = app.shape().layers as u16 + 4;
    wanted.min((available / 2).max(8))
}

/// Draws the grid and records its cells for mouse clicks.
pub fn draw(frame: &mut Frame, area: Rect, app: &mut App) {
    let shape = *app.shape();
    let shadow = app
        .current
        .as_ref()
        .is_some_and(|r| r.trace.mode == Mode::Shadow);
    let (sl, sh) = app.selected;
    let title = match app.grid_view {
        GridView::Query => format!(
            "Layer × head · {} · L{sl} H{sh}",
            if shadow {
                "true similarity"
            } else {
                "predicted similarity"
            }
        ),
        GridView::Pinned => format!(
            "Layer × head · vs pinned {} · L{sl} H{sh}: similarity {}",
            app.pinned
                .as_ref()
                .map_or("(nothing)", |p| p.label.as_str()),
            app.pinned_similarity(sl, sh)
                .map_or("–".into(), |v| format!("{v:.3}")),
        ),
        GridView::Stream | GridView::Calibration => {
            let (rate, similarity) = corpus_numbers(app, sl, sh).unwrap_or((f64::NAN, None));
            format!(
                "Layer × head · {} · L{sl} H{sh}: similarity {}, hits {}",
                match app.grid_view {
                    GridView::Stream => format!("stream so far, {} runs", app.tally.queries),
                    _ => format!("last check, {} calibration queries", app.check_queries),
                },
                similarity.map_or("–".into(), |v| format!("{v:.3}")),
                if rate.is_nan() {
                    "–".to_string()
                } else {
                    format!("{:.0}%", rate * 100.0)
                },
            )
        }
    };
    let block = panel_block(app, Panel::Grid, title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let label = 4usize;
    let cell = ((inner.width as usize).saturating_sub(label) / shape.heads.max(1)).clamp(2, 5);
    let rows = (inner.height as usize).saturating_sub(2);
    if sl < app.grid_scroll {
        app.grid_scroll = sl;
    } else if rows > 0 && sl >= app.grid_scroll + rows {
        app.grid_scroll = sl + 1 - rows;
    }
    let mut lines = Vec::new();
    let mut header = vec![Span::raw(" ".repeat(label))];
    for h in 0..shape.heads {
        let name = if cell > 3 {
            format!("H{h}")
        } else {
            h.to_string()
        };
        header.push(Span::styled(format!("{name:^cell$}"), app.theme.dim()));
    }
    lines.push(Line::from(header));
    let layers = app.current.as_ref().map(|r| r.trace.layers.clone());
    let layers = layers.as_deref();
    for l in (app.grid_scroll..shape.layers).take(rows) {
        let y = inner.y + 1 + (l - app.grid_scroll) as u16;
        let mut spans = vec![Span::styled(
            format!("{:<label$}", format!("L{l}")),
            app.theme.dim(),
        )];
        for h in 0..shape.heads {
            let (text, value) = match app.grid_view {
                GridView::Query => query_cell(layers, l, h, shadow, cell),
                GridView::Stream | GridView::Calibration => stream_cell(app, l, h, cell),
                GridView::Pinned => match app.pinned_similarity(l, h) {
                    Some(v) => (
                        cell_text(false, Some(v), cell).replacen(MISS, " ", 1),
                        Some(v),
                    ),
                    None => (format!("{:^cell$}", "–"), None),
                },
            };
            let (text, value) = overlay(app, l, h, cell, text, value);
            let mut style = app.theme.similarity(value);
            if (l, h) == app.selected {
                style = style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
            }
            spans.push(Span::styled(text, style));
            let x = inner.x + (label + h * cell) as u16;
            app.areas
                .cells
                .push((Rect::new(x, y, cell as u16, 1), l, h));
        }
        lines.push(Line::from(spans));
    }
    if shape.layers > rows && rows > 0 {
        lines.push(Line::from(Span::styled(
            format!(
                "layers {}–{} of {} (↑↓ scroll)",
                app.grid_scroll,
                (app.grid_scroll + rows).min(shape.layers) - 1,
                shape.layers
            ),
            app.theme.dim(),
        )));
    } else {
        lines.push(legend(app));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The overlay's change to a cell: the head type's tag in place of the
/// glyph, or the head's entropy in place of the similarity.
fn overlay(
    app: &App,
    l: usize,
    h: usize,
    cell: usize,
    text: String,
    value: Option<f32>,
) -> (String, Option<f32>) {
    let profile = app
        .db
        .as_ref()
        .and_then(|db| db.head_types())
        .and_then(|t| t.get(l, h));
    match (app.overlay, profile) {
        (Overlay::Types, Some(p)) => {
            let rest: String = text.chars().skip(1).collect();
            (format!("{}{rest}", p.kind.tag()), value)
        }
        (Overlay::Entropy, Some(p)) => {
            let glyph = text.chars().next().unwrap_or(' ');
            let number = cell_text(false, Some(p.entropy), cell);
            let rest: String = number.chars().skip(1).collect();
            (format!("{glyph}{rest}"), Some(p.entropy))
        }
        _ => (text, value),
    }
}

/// A cell of the query view: the current trace's hit and similarity (true
/// in shadow mode, predicted otherwise).
fn query_cell(
    layers: Option<&[LayerTrace]>,
    l: usize,
    h: usize,
    shadow: bool,
    cell: usize,
) -> (String, Option<f32>) {
    let trace = layers.and_then(|ls| ls.get(l)).and_then(|layer| {
        let head = layer.heads.get(h)?;
        layer.neighbour.as_ref()?;
        Some((
            head.hit,
            if shadow {
                head.similarity
            } else {
                head.predicted
            },
        ))
    });
    match trace {
        Some((hit, value)) => (cell_text(hit, value, cell), value),
        None => (format!("{:^cell$}", "–"), None),
    }
}

/// A cell of the stream view: a glyph for the hit rate (`●` at least half
/// the runs, `◐` some, `·` none) and the mean true similarity.
fn stream_cell(app: &App, l: usize, h: usize, cell: usize) -> (String, Option<f32>) {
    let Some((rate, similarity)) = corpus_numbers(app, l, h) else {
        return (format!("{:^cell$}", "–"), None);
    };
    let value = similarity.map(|v| v as f32);
    let text = cell_text(rate >= 0.5, value, cell);
    let text = match rate {
        r if r > 0.0 && r < 0.5 => text.replacen(MISS, &SOME_HITS.to_string(), 1),
        _ => text,
    };
    (text, value)
}

/// Head `(l, h)`'s hit rate and mean true similarity in the stream view
/// (this session's runs) or the calibration view (the last check).
fn corpus_numbers(app: &App, l: usize, h: usize) -> Option<(f64, Option<f64>)> {
    match app.grid_view {
        GridView::Calibration => {
            let heads = app.check_heads.as_ref()?;
            Some((
                *heads.hit_rate.get(l)?.get(h)?,
                *heads.cacheability.get(l)?.get(h)?,
            ))
        }
        _ => Some((app.tally.hit_rate(l, h)?, app.tally.similarity(l, h))),
    }
}

/// The stream view's glyph for a head that hit in some runs, not most.
const SOME_HITS: char = '◐';

/// One cell: the hit glyph and the similarity in as many characters as fit.
fn cell_text(hit: bool, value: Option<f32>, width: usize) -> String {
    let glyph = if hit { HIT } else { MISS };
    let percent = |v: f32| format!("{:02}", ((v * 100.0).round() as i32).clamp(0, 99));
    let number = match (value, width) {
        (None, _) => "?".to_string(),
        (Some(v), 2) => shade(v).to_string(),
        (Some(v), 3 | 4) => percent(v),
        (Some(v), _) if v >= 0.995 => "1.0".to_string(),
        (Some(v), _) => format!("{v:.2}")[1..].to_string(),
    };
    format!("{:<width$}", format!("{glyph}{number}"))
}

/// The legend: glyphs and the colour (or shade) ramp.
fn legend(app: &App) -> Line<'static> {
    let mut spans = vec![Span::raw(match (app.overlay, app.grid_view) {
        (Overlay::Types, _) => "P pos ← prev F/L sink B broad C content ".to_string(),
        (Overlay::Entropy, _) => "colour, digits = row entropy  ".to_string(),
        (_, GridView::Query) => format!("{HIT} hit  {MISS} miss  – no neighbour  "),
        (_, GridView::Stream | GridView::Calibration) => {
            format!("{HIT} ≥½ hit {SOME_HITS} some {MISS} none  ")
        }
        (_, GridView::Pinned) => "similarity of the pinned input's map  ".to_string(),
    })];
    if app.theme.color {
        spans.push(Span::raw("0 "));
        for i in 0..=8 {
            let v = i as f32 / 8.0;
            spans.push(Span::styled(" ", app.theme.similarity(Some(v))));
        }
        spans.push(Span::raw(" 1"));
    } else {
        spans.push(Span::raw("similarity in %"));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_fit_their_width() {
        assert_eq!(cell_text(true, Some(0.934), 5), "●.93 ");
        assert_eq!(cell_text(false, Some(1.0), 5), "·1.0 ");
        assert_eq!(cell_text(true, Some(0.934), 4), "●93 ");
        assert_eq!(cell_text(true, Some(0.5), 3), "●50");
        assert_eq!(cell_text(false, Some(1.0), 3), "·99");
        assert_eq!(cell_text(false, Some(1.0), 2), "·█");
        assert_eq!(cell_text(false, None, 4), "·?  ");
    }
}
