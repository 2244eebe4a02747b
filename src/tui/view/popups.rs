//! Popups: help, thresholds, database (with the rebuild form).

use std::sync::Arc;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::super::app::{App, objective_name};
use super::super::keys::HELP;
use super::super::theme::Theme;
use super::shorten;
use crate::cache::Database;

/// A centred rectangle of at most `width × height` inside `area`.
pub fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let (w, h) = (width.min(area.width), height.min(area.height));
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Clears `rect` and draws a framed popup with `lines`.
fn popup(frame: &mut Frame, app: &App, rect: Rect, title: &str, lines: Vec<Line<'static>>) {
    framed(frame, &app.theme, rect, title, lines);
}

/// Clears `rect` and draws a framed popup titled `TITLE · Esc closes`.
pub fn framed(
    frame: &mut Frame,
    theme: &Theme,
    rect: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
) {
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border(true))
        .title(format!(" {title} · Esc closes "));
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

/// Width of the help popup's key column.
const KEY_COLUMN: usize = 16;

/// Every key and what it does; descriptions wrap under themselves when the
/// popup is narrower than a line, and the list scrolls (↑↓) when the screen
/// is shorter than it.
pub fn help(frame: &mut Frame, area: Rect, app: &mut App) {
    let width = area.width.min(84);
    let text_width = (width as usize).saturating_sub(KEY_COLUMN + 3).max(12);
    let mut lines = Vec::new();
    for (keys, what) in HELP {
        let keys = app.keymap.relabel(keys);
        for (i, part) in wrap_words(what, text_width).into_iter().enumerate() {
            let key = if i == 0 { keys.as_str() } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{key:<KEY_COLUMN$}"), app.theme.key()),
                Span::raw(format!(" {part}")),
            ]));
        }
    }
    let rect = centred(area, width, lines.len() as u16 + 2);
    let visible = (rect.height as usize).saturating_sub(2);
    let last = lines.len().saturating_sub(visible);
    app.help_scroll = app.help_scroll.min(last);
    let title = match (app.help_scroll > 0, app.help_scroll < last) {
        (false, false) => "Keys".to_string(),
        (true, true) => "Keys · ↑↓ more".to_string(),
        (false, true) => "Keys · ↓ more".to_string(),
        (true, false) => "Keys · ↑ more".to_string(),
    };
    let lines = lines.into_iter().skip(app.help_scroll).collect();
    popup(frame, app, rect, &title, lines);
}

/// The selected layer's nearest entries: rank, entry, feature distance,
/// the selected head's true similarity, text; Enter compares with one.
pub fn neighbours(frame: &mut Frame, area: Rect, app: &App) {
    let width = area.width.min(100);
    let text_width = (width as usize).saturating_sub(36).max(10);
    let (l, h) = app.selected;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "{:<3}{:>7} {:>9} {:>10}  text (similarity: L{l} H{h} vs exact)",
            "", "entry", "distance", "similarity"
        ),
        app.theme.dim(),
    ))];
    let db = app.current.as_ref().and_then(|r| r.db.as_ref());
    match (&app.neighbours, db) {
        (None, _) | (_, None) => lines.push(Line::raw("finding the nearest entries…")),
        (Some(list), Some(db)) => {
            for (i, n) in list.entries.iter().enumerate() {
                let text = entry_text(Some(db), n.entry);
                let style = app.theme.selected_if(i == app.neighbour_row);
                lines.push(Line::from(Span::styled(
                    format!(
                        "{:<3}{:>7} {:>9.4} {:>10}  {}",
                        i + 1,
                        format!("#{}", n.entry),
                        n.distance,
                        app.similarity_to(n.entry)
                            .map_or("–".into(), |s| format!("{s:.3}")),
                        shorten(text, text_width)
                    ),
                    style,
                )));
            }
            if list.entries.is_empty() {
                lines.push(Line::raw(
                    "no entry can serve this query (none of its length)",
                ));
            }
        }
    }
    let rect = centred(area, width, lines.len() as u16 + 2);
    popup(
        frame,
        app,
        rect,
        &format!("Nearest entries · layer {l} · Enter compares"),
        lines,
    );
}

/// The search popup: the typed text and the matching entries around the
/// selected one; Enter pins it.
pub fn search(frame: &mut Frame, area: Rect, app: &App) {
    let width = area.width.min(100);
    let rows = (area.height as usize).saturating_sub(8).clamp(3, 15);
    let search = &app.search;
    let mut lines = vec![
        Line::from(vec![
            Span::raw("find: "),
            Span::styled(format!("{}▏", search.input), app.theme.selected()),
        ]),
        Line::from(Span::styled(
            match (search.input.is_empty(), search.matches.len()) {
                (true, _) => "type part of a text".to_string(),
                (false, 0) => "no entry contains it".to_string(),
                (false, n) if n >= crate::tui::app::SEARCH_MATCHES => format!("first {n} matches"),
                (false, n) => format!("{n} matches"),
            },
            app.theme.dim(),
        )),
    ];
    let first = search.row.saturating_sub(rows - 1);
    let db = app.db.as_ref();
    for (i, &entry) in search.matches.iter().enumerate().skip(first).take(rows) {
        let text = entry_text(db, entry);
        let style = app.theme.selected_if(i == search.row);
        lines.push(Line::from(Span::styled(
            format!(
                "{:>7}  {}",
                format!("#{entry}"),
                shorten(text, (width as usize).saturating_sub(13))
            ),
            style,
        )));
    }
    let rect = centred(area, width, rows as u16 + 4);
    popup(frame, app, rect, "Search the database · Enter pins", lines);
}

/// The text of database entry `entry` as its user wrote it (a decoder's
/// prompt unwrapped), or nothing.
fn entry_text(db: Option<&Arc<Database>>, entry: u32) -> &str {
    db.and_then(|db| db.entries().get(entry as usize))
        .map_or("", |e| crate::eval::task_input(&e.text))
}

/// `text` cut at spaces into lines of at most `width` characters (a word
/// longer than `width` gets a line of its own).
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if !line.is_empty() && needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// Global scale, per-layer thresholds as bars, budget, last check.
pub fn thresholds(frame: &mut Frame, area: Rect, app: &App) {
    let policy = &app.policy;
    let largest = policy
        .max_distance
        .iter()
        .flatten()
        .fold(0.05f32, |a, &b| a.max(b));
    let bar_width = 24usize;
    let row_style = |row: usize| app.theme.selected_if(row == app.threshold_row);
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "global scale ×{:.2} on {} ({})",
                app.scale,
                app.base_policy.name,
                if policy.all_or_nothing {
                    "one look-up, all or nothing"
                } else {
                    "per-layer look-up, per-head thresholds"
                }
            ),
            row_style(0),
        )),
        Line::from(Span::styled(
            format!(
                "{:<4}{:<bar_width$} {:>7} {:>7} {:>6} {:>6}",
                "", "mean threshold", "mean", "max", "heads", "scale"
            ),
            app.theme.dim(),
        )),
    ];
    if let Some(kind) = app.type_filter {
        lines.insert(
            1,
            Line::from(Span::styled(
                format!(
                    "{} heads only (f cycles), their scale ×{:.2}: +/- scale them",
                    kind.name(),
                    app.type_scale[kind.index()]
                ),
                app.theme.cached(),
            )),
        );
    }
    for (l, full_row) in policy.max_distance.iter().enumerate() {
        let row: Vec<f32> = full_row
            .iter()
            .enumerate()
            .filter(|&(h, _)| {
                app.type_filter
                    .is_none_or(|k| app.head_type(l, h) == Some(k))
            })
            .map(|(_, &d)| d)
            .collect();
        let mean = row.iter().sum::<f32>() / row.len().max(1) as f32;
        let max = row.iter().fold(0f32, |a, &b| a.max(b));
        let open = row
            .iter()
            .filter(|&&d| d > crate::cache::policy::IDENTICAL)
            .count();
        let cells = ((mean / largest) * bar_width as f32).round() as usize;
        lines.push(Line::from(vec![
            Span::styled(format!("L{l:<3}"), row_style(l + 1)),
            Span::styled(
                format!("{:<bar_width$}", "█".repeat(cells.min(bar_width))),
                app.theme.cached(),
            ),
            Span::styled(
                format!(
                    " {mean:>7.4} {max:>7.4} {:>6} ×{:>5.2}",
                    format!("{open}/{}", row.len()),
                    app.layer_scale[l]
                ),
                row_style(l + 1),
            ),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::raw(format!(
        "calibration budget: {} ≤ {}  ([ ] change, o objective, c calibrate)",
        objective_name(app.objective),
        app.budget
    )));
    if let Some(c) = &policy.calibration {
        lines.push(Line::from(Span::styled(
            format!(
                "calibrated on {}: {} {:.4} (budget {}), expected hit rate {:.1}%",
                c.split,
                c.objective,
                c.measured_error,
                c.budget,
                c.expected_hit_rate * 100.0
            ),
            app.theme.dim(),
        )));
        if let Some(summary) = c.rule_summary() {
            lines.push(Line::from(Span::styled(summary, app.theme.dim())));
        }
    }
    lines.push(match (app.checks.last(), &app.job) {
        (_, Some(job)) if job.name == "check" => Line::raw(format!(
            "checking these thresholds on the calibration split… {}/{}",
            job.done, job.total
        )),
        (Some(p), _) => Line::raw(format!(
            "×{:.2} on {} calibration queries: hits {:.1}%, loss {:.2}, fidelity {:.4}, e2e {:.2}×",
            p.knob,
            app.check_queries,
            p.hit_rate * 100.0,
            p.loss(),
            p.fidelity_mean,
            p.e2e_speedup
        )),
        _ => Line::from(Span::styled(
            "+/- re-decide the current query at once and check the calibration split",
            app.theme.dim(),
        )),
    });
    lines.push(Line::from(Span::styled(
        "↑↓ row (global or one layer) · +/- loosen/tighten that row",
        app.theme.dim(),
    )));
    let rect = centred(area, 78, lines.len() as u16 + 2);
    popup(frame, app, rect, "Thresholds", lines);
}

/// Database facts, a length histogram and the rebuild form.
pub fn database(frame: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    match &app.db {
        Some(db) => {
            let m = db.manifest();
            lines.push(Line::raw(shorten(&format!("{}", db.dir().display()), 74)));
            lines.push(Line::raw(format!(
                "{} entries from {} · {:.1} MB · maps {} · feature {:?} ({} dims)",
                db.entries().len(),
                m.corpus,
                db.size_on_disk() as f64 / 1e6,
                m.map_dtype,
                m.feature,
                m.feature_dim
            )));
            lines.extend(length_histogram(app, db.entries().iter().map(|e| e.tokens)));
        }
        None => lines.push(Line::raw(format!(
            "no database yet; a rebuild writes {}",
            shorten(&format!("{}", app.db_dir.display()), 50)
        ))),
    }
    lines.push(Line::raw(""));
    let field = |i: usize, name: &str, value: &str, hint: &str| {
        let style = if app.rebuild.field == i {
            ratatui::style::Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Default::default()
        };
        Line::from(vec![
            Span::raw(format!("{name:<8}")),
            Span::styled(format!("{:<28}", format!("{value}▏")), style),
            Span::styled(format!(" {hint}"), app.theme.dim()),
        ])
    };
    lines.push(Line::raw("Rebuild (Tab switches field, Enter starts):"));
    lines.push(field(
        0,
        "corpus",
        &app.rebuild.corpus,
        "rt:db, rt:calib, file.txt/.jsonl/.csv",
    ));
    lines.push(field(1, "limit", &app.rebuild.limit, "empty = all texts"));
    if let Some(job) = app.job.as_ref().filter(|j| j.name == "rebuild") {
        lines.push(Line::raw(format!(
            "rebuilding… {}/{} (Esc twice cancels; the current database stays in service)",
            job.done, job.total
        )));
    }
    let rect = centred(area, 78, lines.len() as u16 + 2);
    popup(frame, app, rect, "Database", lines);
}

/// Token-length histogram in eight bins, one bar line per bin.
fn length_histogram(app: &App, lengths: impl Iterator<Item = usize>) -> Vec<Line<'static>> {
    let lengths: Vec<usize> = lengths.collect();
    let Some(&max) = lengths.iter().max() else {
        return Vec::new();
    };
    let bins = 8usize;
    let width = max.div_ceil(bins).max(1);
    let mut counts = vec![0usize; bins];
    for &n in &lengths {
        counts[((n.max(1) - 1) / width).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1);
    let mut lines = vec![Line::from(Span::styled(
        "entries by token length",
        app.theme.dim(),
    ))];
    for (i, &c) in counts.iter().enumerate() {
        let cells = (c * 40).div_ceil(top.max(1));
        lines.push(Line::from(vec![
            Span::raw(format!("{:>4}–{:<4}", i * width + 1, (i + 1) * width)),
            Span::styled("█".repeat(cells), app.theme.cached()),
            Span::raw(format!(" {c}")),
        ]));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::wrap_words;

    #[test]
    fn words_wrap_within_the_width_and_keep_every_word() {
        let text = "loosen / tighten the thresholds (selected layer in the popup)";
        for width in [12, 20, 40, 80] {
            let lines = wrap_words(text, width);
            assert!(
                lines.iter().all(|l| l.chars().count() <= width),
                "{lines:?}"
            );
            assert_eq!(lines.join(" "), text);
        }
        assert_eq!(wrap_words("short", 80), vec!["short"]);
    }
}
