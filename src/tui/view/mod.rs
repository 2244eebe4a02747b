//! Drawing: the screen layout and one module per panel or popup. Each
//! component draws from the [`App`] alone; the layout records where panels and
//! grid cells landed so mouse clicks can find them.

mod grid;
mod header;
mod heatmap;
mod history;
mod latency;
mod maps;
pub mod popups;
mod query;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::app::{App, HitAreas, Panel, Popup};
use super::keys::HINTS;
use super::theme::Theme;
pub use crate::text::shorten;

/// The smallest terminal the dashboard draws into (inside the app's tabs it
/// gets one row less: the tab bar).
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &mut App) {
    draw_in(frame, frame.area(), app);
}

/// Draws the dashboard into `area` (the whole screen, or a tab's share).
pub fn draw_in(frame: &mut Frame, area: Rect, app: &mut App) {
    app.areas = HitAreas::default();
    let screen = frame.area();
    if screen.width < MIN_SIZE.0 || screen.height < MIN_SIZE.1 {
        let text = format!(
            "attncache needs at least {}×{} (this terminal is {}×{}); q quits",
            MIN_SIZE.0, MIN_SIZE.1, screen.width, screen.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Default::default()), area);
        return;
    }
    let [header_area, body, status_area, hints_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(frame, header_area, app);
    if app.zoomed {
        app.areas.panels.push((app.focus, body));
        draw_panel_in(frame, body, app, app.focus);
    } else {
        draw_body(frame, body, app);
    }
    draw_status(frame, status_area, app);
    draw_hints(frame, hints_area, app);
    match app.popup() {
        Some(Popup::Help) => popups::help(frame, area, app),
        Some(Popup::Thresholds) => popups::thresholds(frame, area, app),
        Some(Popup::Database) => popups::database(frame, area, app),
        Some(Popup::Neighbours) => popups::neighbours(frame, area, app),
        Some(Popup::Search) => popups::search(frame, area, app),
        None => {}
    }
}

/// Draws one panel over the whole frame (component tests and exports).
pub fn draw_panel(frame: &mut Frame, app: &mut App, panel: Panel) {
    draw_panel_in(frame, frame.area(), app, panel);
}

/// Draws one panel into `area` (zoom, component tests, exports).
fn draw_panel_in(frame: &mut Frame, area: Rect, app: &mut App, panel: Panel) {
    match panel {
        Panel::Query => query::draw(frame, area, app),
        Panel::History => history::draw(frame, area, app),
        Panel::Grid => grid::draw(frame, area, app),
        Panel::Maps => maps::draw(frame, area, app),
        Panel::Latency => latency::draw(frame, area, app),
    }
}

/// The panels: left column query, history and latency; right column grid
/// and maps.
fn draw_body(frame: &mut Frame, area: Rect, app: &mut App) {
    let left_width = (area.width * 2 / 5).clamp(36, 60);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Min(0)]).areas(area);
    let latency_height = if area.height >= 30 { 14 } else { 12 };
    let [query_area, history_area, latency_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(latency_height),
    ])
    .areas(left);
    let grid_height = grid::height(app, right.height);
    let [grid_area, maps_area] =
        Layout::vertical([Constraint::Length(grid_height), Constraint::Min(0)]).areas(right);
    for (panel, rect) in [
        (Panel::Query, query_area),
        (Panel::History, history_area),
        (Panel::Latency, latency_area),
        (Panel::Grid, grid_area),
        (Panel::Maps, maps_area),
    ] {
        app.areas.panels.push((panel, rect));
    }
    query::draw(frame, query_area, app);
    history::draw(frame, history_area, app);
    latency::draw(frame, latency_area, app);
    grid::draw(frame, grid_area, app);
    maps::draw(frame, maps_area, app);
}

/// A panel's frame, highlighted when focused.
pub fn panel_block(app: &App, panel: Panel, title: impl Into<String>) -> Block<'static> {
    framed_panel(
        &app.theme,
        app.focus == panel && app.popups.is_empty(),
        title,
    )
}

/// A panel's frame and title in `theme`, brighter when `focused` (every view's
/// panels).
pub fn framed_panel(theme: &Theme, focused: bool, title: impl Into<String>) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border(focused))
        .title(Span::styled(
            format!(" {} ", title.into()),
            theme.border(focused),
        ))
}

/// The status line: the running job's gauge, else the last message.
fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    if let Some(job) = &app.job {
        spans = job_gauge(&app.theme, job.name, job.done, job.total);
    }
    if let Some(status) = &app.status {
        let style = if status.error {
            app.theme.error()
        } else {
            Default::default()
        };
        spans.push(Span::styled(status.text.clone(), style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A running job's gauge for a status line:
/// `NAME [████░░░░] DONE/TOTAL Esc cancels`.
pub fn job_gauge(theme: &Theme, name: &str, done: usize, total: usize) -> Vec<Span<'static>> {
    let width = 20usize;
    let fraction = if total > 0 {
        done as f64 / total as f64
    } else {
        0.0
    };
    let filled = ((fraction * width as f64).round() as usize).min(width);
    vec![
        Span::styled(
            format!(
                "{name} [{}{}] {done}/{total} ",
                "█".repeat(filled),
                "░".repeat(width - filled)
            ),
            theme.cached(),
        ),
        Span::styled("Esc cancels  ", theme.dim()),
    ]
}

/// The key-hint bar (typing mode shows its own keys).
fn draw_hints(frame: &mut Frame, area: Rect, app: &App) {
    let typing: &[(&str, &str)] = &[("Enter", "run"), ("Esc", "stop typing"), ("Ctrl-C", "quit")];
    let form: &[(&str, &str)] = &[
        ("Tab", "field"),
        ("Enter", "rebuild"),
        ("Esc", "close"),
        ("Ctrl-C", "quit"),
    ];
    let hints = if app.editing {
        typing
    } else if app.popup() == Some(Popup::Database) {
        form
    } else {
        HINTS
    };
    // Keys a config file moved are shown where they are now.
    let keys: Vec<String> = hints.iter().map(|(k, _)| app.keymap.relabel(k)).collect();
    let hints: Vec<(&str, &str)> = keys
        .iter()
        .zip(hints)
        .map(|(k, (_, what))| (k.as_str(), *what))
        .collect();
    hint_bar(frame, area, &app.theme, &hints);
}

/// The key-hint bar: as many `(key, what)` pairs as fit the width.
pub fn hint_bar(frame: &mut Frame, area: Rect, theme: &Theme, hints: &[(&str, &str)]) {
    let mut spans = Vec::new();
    let mut used = 0usize;
    for (key, what) in hints {
        let len = key.chars().count() + what.chars().count() + 3;
        if used + len > area.width as usize {
            break;
        }
        used += len;
        spans.push(Span::styled(format!(" {key} "), theme.key()));
        spans.push(Span::raw(format!("{what} ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
