//! Recent queries with their hit fraction and latency.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Panel, mode_name};
use super::{panel_block, shorten};

/// Draws the history list, newest first, the selected row highlighted.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel_block(app, Panel::History, "History (Enter re-runs)");
    let inner = block.inner(area);
    let rows = inner.height as usize;
    let width = inner.width as usize;
    let first = app.history_selected.saturating_sub(rows.saturating_sub(1));
    let mut lines: Vec<Line> = Vec::new();
    if app.history.is_empty() {
        lines.push(Line::from(Span::styled("no queries yet", app.theme.dim())));
    }
    for (i, item) in app.history.iter().enumerate().skip(first).take(rows) {
        let stats = format!(
            " {:>3.0}% {:>6.1}ms {}",
            item.hit_rate * 100.0,
            item.timings.total,
            &mode_name(item.mode)[..1]
        );
        let text_width = width.saturating_sub(stats.chars().count());
        let text = format!("{:<text_width$}", shorten(&item.text, text_width));
        let style = app
            .theme
            .selected_if(i == app.history_selected && app.focus == Panel::History);
        lines.push(Line::from(vec![
            Span::styled(text, style),
            Span::styled(stats, app.theme.dim()),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
