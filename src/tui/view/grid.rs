//! The layer × head grid: one cell per head, shaded by similarity (true in
//! shadow mode, predicted otherwise), a glyph for hit or miss.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Panel};
use super::super::theme::{HIT, MISS, shade};
use super::panel_block;
use crate::engine::Mode;

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
    let what = if shadow {
        "true similarity"
    } else {
        "predicted similarity"
    };
    let (sl, sh) = app.selected;
    let block = panel_block(
        app,
        Panel::Grid,
        format!("Layer × head · {what} · L{sl} H{sh}"),
    );
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
    for l in (app.grid_scroll..shape.layers).take(rows) {
        let y = inner.y + 1 + (l - app.grid_scroll) as u16;
        let mut spans = vec![Span::styled(
            format!("{:<label$}", format!("L{l}")),
            app.theme.dim(),
        )];
        for h in 0..shape.heads {
            let trace = layers.as_ref().and_then(|ls| ls.get(l)).and_then(|layer| {
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
            let (text, value) = match trace {
                Some((hit, value)) => (cell_text(hit, value, cell), value),
                None => (format!("{:^cell$}", "–"), None),
            };
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
    let mut spans = vec![Span::raw(format!(
        "{HIT} hit  {MISS} miss  – no neighbour  "
    ))];
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
