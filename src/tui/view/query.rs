//! The query input and the stream's state.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Panel};
use super::{panel_block, shorten};

/// Draws the query panel (with the cursor while typing).
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let stream = if app.stream.paused {
        "paused".to_string()
    } else {
        format!("streaming {}", app.stream.name)
    };
    let block = panel_block(app, Panel::Query, format!("Query · {stream}"));
    let inner = block.inner(area);
    let width = inner.width as usize;
    let line = if app.editing {
        let shown: String = {
            let chars: Vec<char> = app.input.chars().collect();
            let start = chars.len().saturating_sub(width.saturating_sub(2));
            chars[start..].iter().collect()
        };
        let x = inner.x + 2 + shown.chars().count() as u16;
        frame.set_cursor_position(Position::new(
            x.min(inner.right().saturating_sub(1)),
            inner.y,
        ));
        Line::from(vec![Span::raw("> "), Span::raw(shown)])
    } else if app.input.is_empty() {
        Line::from(Span::styled("press i to type a query", app.theme.dim()))
    } else {
        Line::from(Span::raw(shorten(&app.input, width)))
    };
    frame.render_widget(Paragraph::new(line).block(block), area);
}
