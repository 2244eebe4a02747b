//! The selected head's maps: exact, reused (the neighbour's), and their
//! difference, with the neighbour's text and distance.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, GridView, HeadMaps, Panel};
use super::{heatmap, panel_block, shorten};

/// Draws the maps panel.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let (l, h) = app.selected;
    let block = panel_block(app, Panel::Maps, format!("Attention maps · L{l} H{h}"));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(maps) = &app.head_maps else {
        frame.render_widget(
            Paragraph::new(Span::styled(
                "waiting for the first query…",
                app.theme.dim(),
            )),
            inner,
        );
        return;
    };
    let [info, pictures, neighbour] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(2),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(summary(app, maps)), info);
    draw_pictures(frame, pictures, app, maps);
    frame.render_widget(
        Paragraph::new(neighbour_lines(app, inner.width as usize)),
        neighbour,
    );
}

/// One line: what the head did and how close the maps are.
fn summary(app: &App, maps: &HeadMaps) -> Line<'static> {
    let head = app.current.as_ref().and_then(|r| {
        r.trace
            .layers
            .get(maps.layer)?
            .heads
            .get(maps.head)
            .copied()
    });
    let mut parts = vec![format!("{} tokens", maps.tokens.len())];
    if let Some(head) = head {
        parts.push(if head.hit {
            "reused".into()
        } else {
            "computed".into()
        });
        if let Some(s) = head.similarity {
            parts.push(format!("similarity {s:.3}"));
        }
        if let Some(p) = head.predicted {
            parts.push(format!("predicted {p:.3}"));
        }
        if let Some(js) = head.js {
            parts.push(format!("JS {js:.4}"));
        }
    }
    Line::raw(parts.join(" · "))
}

/// Exact, reused and difference side by side, tokens on the first's rows
/// when they fit.
fn draw_pictures(frame: &mut Frame, area: Rect, app: &App, maps: &HeadMaps) {
    let s = maps.tokens.len();
    let label = if area.width >= 70 { 7 } else { 0 };
    let each = (area.width.saturating_sub(label) / 3) as usize;
    let n = heatmap::side(
        &app.theme,
        s,
        each.saturating_sub(1),
        area.height.saturating_sub(1) as usize,
    );
    if n == 0 {
        return;
    }
    let exact = heatmap::resample(&maps.exact, s, n);
    let cached = maps.cached.as_ref().map(|m| heatmap::resample(m, s, n));
    let scale = exact
        .iter()
        .chain(cached.iter().flatten())
        .fold(0f32, |a, &b| a.max(b));
    let columns = Layout::horizontal([
        Constraint::Length(label),
        Constraint::Length(each as u16),
        Constraint::Length(each as u16),
        Constraint::Length(each as u16),
    ])
    .split(area);
    let title = |t: &str| Line::from(Span::styled(t.to_string(), app.theme.dim()));
    let mut first = vec![title("exact")];
    first.extend(heatmap::lines(&app.theme, &exact, n, scale));
    frame.render_widget(Paragraph::new(first), columns[1]);
    let (second, third) = match &cached {
        Some(cached) => {
            let diff: Vec<f32> = exact
                .iter()
                .zip(cached)
                .map(|(a, b)| (a - b).abs())
                .collect();
            let mut second = vec![title("reused")];
            second.extend(heatmap::lines(&app.theme, cached, n, scale));
            let mut third = vec![title("|difference|")];
            third.extend(heatmap::lines(&app.theme, &diff, n, scale));
            (second, third)
        }
        None => (
            vec![title("reused"), Line::raw("no neighbour")],
            vec![title("|difference|"), Line::raw("–")],
        ),
    };
    frame.render_widget(Paragraph::new(second), columns[2]);
    frame.render_widget(Paragraph::new(third), columns[3]);
    if label > 0 {
        frame.render_widget(
            Paragraph::new(token_labels(app, maps, n, label as usize)),
            columns[0],
        );
    }
}

/// Token labels for the heatmap rows (one per token where each token gets a
/// line of its own), else the map's size.
fn token_labels(app: &App, maps: &HeadMaps, n: usize, width: usize) -> Vec<Line<'static>> {
    let s = maps.tokens.len();
    let pixels_per_line = if app.theme.color { 2 } else { 1 };
    let mut lines = vec![Line::raw("")];
    if n >= s && n / s >= pixels_per_line {
        let per_token = n / s / pixels_per_line;
        for token in &maps.tokens {
            lines.push(Line::from(Span::styled(
                shorten(token, width - 1),
                app.theme.dim(),
            )));
            lines.extend((1..per_token).map(|_| Line::raw("")));
        }
    } else {
        lines.push(Line::from(Span::styled(
            format!("{s}×{s}"),
            app.theme.dim(),
        )));
        lines.push(Line::from(Span::styled(
            format!("→{n}×{n}"),
            app.theme.dim(),
        )));
    }
    lines
}

/// The neighbour used by the selected layer: its text and distance.
fn neighbour_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    if let (GridView::Pinned, Some(p)) = (app.grid_view, &app.pinned) {
        return vec![Line::from(Span::styled(
            format!(
                "compared with the pinned {} · {} tokens (v switches back)",
                p.label, p.tokens
            ),
            app.theme.dim(),
        ))];
    }
    let chosen = app
        .compare
        .zip(app.current.as_ref().and_then(|r| r.db.as_ref()))
        .and_then(|(entry, db)| db.entries().get(entry as usize));
    if let Some(e) = chosen {
        return vec![
            Line::from(Span::styled(
                format!(
                    "compared with entry #{} (chosen with n) · {} tokens · similarity {}",
                    e.id,
                    e.tokens,
                    app.similarity_to(e.id)
                        .map_or("–".into(), |s| format!("{s:.3}"))
                ),
                app.theme.dim(),
            )),
            Line::raw(shorten(crate::eval::task_input(&e.text), width)),
        ];
    }
    let layer = app
        .current
        .as_ref()
        .and_then(|r| r.trace.layers.get(app.selected.0));
    match layer.and_then(|l| l.neighbour.as_ref()) {
        Some(n) => vec![
            Line::from(Span::styled(
                format!(
                    "neighbour #{}{} · {} tokens · distance {:.4} · threshold {:.4}",
                    n.entry,
                    if n.carried { " (carried)" } else { "" },
                    n.tokens,
                    n.distance,
                    app.policy.max_distance[app.selected.0][app.selected.1]
                ),
                app.theme.dim(),
            )),
            Line::raw(shorten(crate::eval::task_input(&n.text), width)),
        ],
        None => vec![Line::from(Span::styled(
            "no neighbour for this layer (exact mode, or no entry of this length)",
            app.theme.dim(),
        ))],
    }
}
