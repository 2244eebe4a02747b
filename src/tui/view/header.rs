//! The header: model, device, database, mode, policy and running hit rate.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, mode_name};

/// Draws the header line.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let shape = app.shape();
    let db = match &app.db {
        Some(db) => format!(
            "{} entries {:.0} MB",
            db.entries().len(),
            db.size_on_disk() as f64 / 1e6
        ),
        None => "none".into(),
    };
    let policy = match app.policy.calibration.as_ref() {
        Some(c) if app.scale == 1.0 => format!("{} (budget {})", app.policy.name, c.budget),
        _ => app.policy.name.clone(),
    };
    let hits = app
        .session_hit_rate()
        .map_or("–".into(), |r| format!("{:.1}%", r * 100.0));
    let bold = Span::styled(
        "attncache",
        ratatui::style::Style::new().add_modifier(Modifier::BOLD),
    );
    // Most important first: a narrow terminal cuts the end.
    let fields = [
        format!("mode {}", mode_name(app.mode)),
        format!("hits {hits}"),
        format!("policy {policy}"),
        format!("db {db}"),
        format!(
            "{} {}×{} {}",
            app.model.name, shape.layers, shape.heads, app.model.device
        ),
    ];
    let mut spans = vec![bold];
    for field in fields {
        spans.push(Span::styled(" │ ", app.theme.dim()));
        spans.push(Span::raw(field));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
