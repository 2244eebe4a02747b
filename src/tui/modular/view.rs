//! Drawing the modular view: header, the prompt as a strip of modules, time
//! to first token of exact / prefix cache / modular, the layer × head grid of
//! question-map similarity to exact (or, with `f`, the session's
//! speed–fidelity frontier), both answers side by side, the status line and
//! the key hints; the help and rebuild popups on top, or the demo view.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Chart, Clear, Dataset, GraphType, LegendPosition, Paragraph, Wrap,
};
use tui_big_text::{BigText, PixelSize};

use super::state::{HELP, HINTS, ModularApp, Panel, Popup, RunSummary, SessionPoint};
use crate::text::shorten;
use crate::tui::theme::shade;
use crate::tui::view::popups::{centred, framed};
use crate::tui::view::{framed_panel, hint_bar, job_gauge};

/// Draws the whole view.
pub fn draw(frame: &mut Frame, app: &mut ModularApp) {
    draw_in(frame, frame.area(), app);
}

/// Draws the view into `area` (the whole screen, or a tab's share).
pub fn draw_in(frame: &mut Frame, area: Rect, app: &mut ModularApp) {
    app.areas.clear();
    let [header, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app);
    let left_width = (body.width * 2 / 5).clamp(36, 60);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Min(0)]).areas(body);
    let [query, strip, latency] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(7),
    ])
    .areas(left);
    let [grid, answers] =
        Layout::vertical([Constraint::Min(6), Constraint::Length(6)]).areas(right);
    for (panel, rect) in [
        (Panel::Query, query),
        (Panel::Strip, strip),
        (Panel::Latency, latency),
        (Panel::Grid, grid),
        (Panel::Answers, answers),
    ] {
        app.areas.push((panel, rect));
    }
    draw_query(frame, query, app);
    draw_strip(frame, strip, app);
    draw_latency(frame, latency, app);
    draw_grid(frame, grid, app);
    draw_answers(frame, answers, app);
    draw_status(frame, status, app);
    draw_hints(frame, hints, app);
    match app.popup() {
        Some(Popup::Help) => draw_help(frame, area, app),
        Some(Popup::Rebuild) => draw_rebuild(frame, area, app),
        Some(Popup::Demo) => draw_demo(frame, area, app),
        Some(Popup::History) => draw_history(frame, area, app),
        None => {}
    }
}

fn block(app: &ModularApp, panel: Panel, title: impl Into<String>) -> Block<'static> {
    framed_panel(
        &app.theme,
        app.focus == panel && app.popups.is_empty(),
        title,
    )
}

fn draw_header(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let text = format!(
        " modular │ store {} │ positions {} │ recovery {} │ chat {} │ {}×{} │ {}",
        app.store_label,
        app.positions.name(),
        app.recovery,
        if app.chat { "on" } else { "off" },
        app.shape.layers,
        app.shape.heads,
        if app.in_flight.is_some() {
            "running…"
        } else if app.paused {
            "paused"
        } else {
            "streaming"
        }
    );
    frame.render_widget(Paragraph::new(Span::styled(text, app.theme.dim())), area);
}

fn draw_query(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let title = if app.prompts.is_empty() {
        "Prompt · type with i".to_string()
    } else {
        format!(
            "Prompt · {} of {} in the file",
            app.next_prompt.min(app.prompts.len()).max(1),
            app.prompts.len()
        )
    };
    let width = area.width.saturating_sub(4) as usize;
    let line = if app.editing {
        let tail: String = app
            .input
            .chars()
            .rev()
            .take(width.saturating_sub(2))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Line::from(vec![Span::raw("> "), Span::raw(tail), Span::raw("▏")])
    } else {
        let label = app
            .current
            .as_ref()
            .map(|c| c.label.clone())
            .unwrap_or_else(|| "i types a prompt: {\"modules\": [...], \"text\": \"...\"}".into());
        Line::from(Span::styled(shorten(&label, width), app.theme.dim()))
    };
    frame.render_widget(
        Paragraph::new(line).block(block(app, Panel::Query, title)),
        area,
    );
}

fn draw_strip(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let mut lines = Vec::new();
    let title = match &app.current {
        Some(c) => format!(
            "Modules · {} tokens, {} cached, {} recomputed",
            c.tokens, c.cached, c.recomputed
        ),
        None => "Modules".into(),
    };
    let width = area.width.saturating_sub(2) as usize;
    if let Some(c) = &app.current {
        for d in &c.decisions {
            let (glyph, style) = match (d.state, d.recomputed) {
                ("cached", 0) => ('●', app.theme.cached()),
                ("cached", _) => ('◐', app.theme.cached()),
                _ => ('○', app.theme.exact()),
            };
            let detail = if d.recomputed > 0 {
                format!("{:>5} tok {:>4} recomputed", d.tokens, d.recomputed)
            } else {
                format!("{:>5} tok {}", d.tokens, d.state)
            };
            let name_width = width.saturating_sub(detail.chars().count() + 3).max(4);
            lines.push(Line::from(vec![
                Span::styled(format!("{glyph} "), style),
                Span::raw(format!("{:<name_width$} ", shorten(&d.label, name_width))),
                Span::styled(detail, app.theme.dim()),
            ]));
        }
    } else {
        lines.push(Line::from(Span::styled(
            "● cached  ◐ rows recomputed  ○ computed",
            app.theme.dim(),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(app, Panel::Strip, title)),
        area,
    );
}

fn draw_latency(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let mut lines = Vec::new();
    let bar_width = area.width.saturating_sub(23) as usize;
    if let Some(c) = &app.current {
        let max = c.ttft_ms.iter().copied().fold(1e-9, f64::max);
        for (i, (name, style)) in [
            ("exact", app.theme.exact()),
            ("prefix", app.theme.exact()),
            ("modular", app.theme.cached()),
        ]
        .into_iter()
        .enumerate()
        {
            let filled = ((c.ttft_ms[i] / max) * bar_width as f64).round().max(1.0) as usize;
            let filled = filled.min(bar_width);
            lines.push(Line::from(vec![
                Span::raw(format!("{name:<8}")),
                Span::styled("█".repeat(filled), style),
                Span::raw(" ".repeat(bar_width - filled)),
                Span::raw(format!(" {:>8.1} ms", c.ttft_ms[i])),
            ]));
        }
        let s = &c.stages;
        lines.push(Line::from(Span::styled(
            format!(
                "load {:.1} rot {:.1} layers {:.1} ms",
                s.load_ms, s.rotate_ms, s.forward_ms
            ),
            app.theme.dim(),
        )));
        // Only runs of the shown setting: a median over settings means nothing.
        let same: Vec<&RunSummary> = app
            .history
            .iter()
            .filter(|h| h.positions == c.positions && h.recovery == c.recovery)
            .collect();
        let median = |i: usize| {
            let mut r: Vec<f64> = same.iter().map(|h| h.ttft_ms[i] / h.ttft_ms[2]).collect();
            r.sort_by(f64::total_cmp);
            r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
        };
        lines.push(Line::from(format!(
            "{} runs of this setting: {:.1}× exact {:.1}× prefix · H all",
            same.len(),
            median(0),
            median(1)
        )));
    } else {
        lines.push(Line::from(Span::styled(
            "TTFT of exact, prefix cache and modular after a run",
            app.theme.dim(),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(app, Panel::Latency, "Time to first token")),
        area,
    );
}

/// Rows of the grid that fit in `area` (header and legend take two).
fn grid_rows(area: Rect) -> usize {
    (area.height as usize).saturating_sub(4)
}

/// Smallest KL on the frontier's log axis.
const KL_FLOOR: f64 = 1e-4;

/// The session's speed–fidelity frontier (`f`): every setting run so far as
/// a point of speedup over exact against log₁₀ next-token KL, the current
/// setting highlighted (it moves as `+`/`-` and `m` change it).
fn draw_frontier(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let points = app.session_frontier();
    let b = block(
        app,
        Panel::Grid,
        "Frontier · this session's settings · speedup over exact against KL (f: grid)",
    );
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let [chart_area, legend] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(2)]).areas(inner);
    let at = |p: &SessionPoint| (p.kl.max(KL_FLOOR).log10(), p.speedup);
    let others: Vec<(f64, f64)> = points.iter().filter(|p| !p.current).map(at).collect();
    let current: Vec<(f64, f64)> = points.iter().filter(|p| p.current).map(at).collect();
    let top = points.iter().map(|p| p.speedup).fold(1.0f64, f64::max) * 1.15;
    let datasets = vec![
        Dataset::default()
            .name("other settings")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(app.theme.exact())
            .data(&others),
        Dataset::default()
            .name("current")
            .marker(Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(app.theme.cached())
            .data(&current),
    ];
    let chart = Chart::new(datasets)
        .x_axis(Axis::default().bounds([KL_FLOOR.log10(), 0.5]).labels(vec![
            Line::raw("KL 1e-4"),
            Line::raw("1e-2"),
            Line::raw("1"),
        ]))
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(vec![Line::raw("0×"), Line::raw(format!("{top:.0}×"))]),
        )
        .legend_position(Some(LegendPosition::TopRight))
        .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(100)));
    frame.render_widget(chart, chart_area);
    let line = match points.iter().find(|p| p.current) {
        Some(p) => format!(
            "current {}: {:.1}× over exact, KL {:.4}, top-1 {:.0} % over {} runs; {} settings so far",
            p.setting,
            p.speedup,
            p.kl,
            p.top1 * 100.0,
            p.runs,
            points.len()
        ),
        None => format!(
            "current {} · {}: not run yet; {} settings so far",
            app.positions.name(),
            app.recovery,
            points.len()
        ),
    };
    frame.render_widget(
        Paragraph::new(Span::styled(line, app.theme.dim())).wrap(Wrap { trim: true }),
        legend,
    );
}

fn draw_grid(frame: &mut Frame, area: Rect, app: &mut ModularApp) {
    if app.show_frontier {
        return draw_frontier(frame, area, app);
    }
    let (sl, sh) = app.selected;
    let value = app
        .current
        .as_ref()
        .and_then(|c| c.similarity.get(sl).and_then(|r| r.get(sh)).copied());
    let title = format!(
        "Layer × head · question-map similarity to exact · L{sl} H{sh}{}",
        value.map(|v| format!(" {v:.3}")).unwrap_or_default()
    );
    let b = block(app, Panel::Grid, title);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let rows = grid_rows(area);
    if sl < app.grid_scroll {
        app.grid_scroll = sl;
    } else if rows > 0 && sl >= app.grid_scroll + rows {
        app.grid_scroll = sl + 1 - rows;
    }
    let label = 4usize;
    let cell = ((inner.width as usize).saturating_sub(label) / app.shape.heads.max(1)).clamp(3, 6);
    let mut lines = Vec::new();
    let mut header = vec![Span::raw(" ".repeat(label))];
    for h in 0..app.shape.heads {
        header.push(Span::styled(
            format!("{:^cell$}", format!("H{h}")),
            app.theme.dim(),
        ));
    }
    lines.push(Line::from(header));
    for l in app.grid_scroll..(app.grid_scroll + rows).min(app.shape.layers) {
        let mut spans = vec![Span::styled(format!("L{l:<3}"), app.theme.dim())];
        for h in 0..app.shape.heads {
            let v = app
                .current
                .as_ref()
                .and_then(|c| c.similarity.get(l).and_then(|r| r.get(h)).copied());
            let text = match v {
                Some(v) if app.theme.color => format!("{:^cell$}", format!("{:.0}", v * 100.0)),
                Some(v) => format!("{:^cell$}", format!("{}{:.0}", shade(v), v * 100.0)),
                None => format!("{:^cell$}", "·"),
            };
            let mut style = app.theme.similarity(v);
            if (l, h) == app.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            spans.push(Span::styled(text, style));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(Span::styled(
        "100 = the question attends exactly as in the exact run",
        app.theme.dim(),
    )));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_answers(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let mut lines = Vec::new();
    if let Some(c) = &app.current {
        let width = area.width.saturating_sub(13) as usize;
        for (name, text, style) in [
            ("exact", &c.answers[0], app.theme.exact()),
            ("modular", &c.answers[1], app.theme.cached()),
        ] {
            lines.push(Line::from(vec![
                Span::styled(format!("{name:<9}"), style),
                Span::raw(shorten(&format!("{text:?}"), width)),
            ]));
        }
        lines.push(Line::from(Span::styled(
            format!(
                "next token {} · KL {:.4} nats",
                if c.top1_agree { "the same" } else { "differs" },
                c.kl
            ),
            if c.top1_agree {
                app.theme.dim()
            } else {
                app.theme.error()
            },
        )));
    } else {
        lines.push(Line::from(Span::styled(
            "greedy answers of exact and modular after a run",
            app.theme.dim(),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(app, Panel::Answers, "Answers (greedy)")),
        area,
    );
}

fn draw_status(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let mut spans = match app.job {
        Some((done, total)) => job_gauge(&app.theme, "rebuild", done, total),
        None => Vec::new(),
    };
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

fn draw_hints(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let typing: &[(&str, &str)] = &[("Enter", "run"), ("Esc", "stop typing"), ("Ctrl-C", "quit")];
    let form: &[(&str, &str)] = &[("Enter", "rebuild"), ("Esc", "close"), ("Ctrl-C", "quit")];
    let hints = if app.editing {
        typing
    } else if app.popup() == Some(Popup::Rebuild) {
        form
    } else {
        HINTS
    };
    hint_bar(frame, area, &app.theme, hints);
}

fn draw_help(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let rect = centred(area, 100, HELP.len() as u16 + 2);
    let key_width = HELP
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<key_width$} "), app.theme.key()),
                Span::raw(format!(" {what}")),
            ])
        })
        .collect();
    framed(frame, &app.theme, rect, "Keys", lines);
}

fn draw_rebuild(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let rect = centred(area, 76, 5);
    let lines = vec![
        Line::from("Rebuild the module store from this schema (TOML or JSON):"),
        Line::from(vec![
            Span::raw("> "),
            Span::styled(app.schema_path.clone(), app.theme.selected()),
            Span::raw("▏"),
        ]),
        Line::from(Span::styled(
            "Enter starts; the old store serves until the new one is complete.",
            app.theme.dim(),
        )),
    ];
    framed(frame, &app.theme, rect, "Rebuild", lines);
}

/// The demo view (`D`): the current comparison in large digits — the
/// speedup over exact prefill, each run's time to first token, then KL,
/// top-1 agreement and both answers in plain text — readable from the back
/// of a room. The other keys keep working underneath (`n`, `+`/`-`, Space).
fn draw_demo(frame: &mut Frame, area: Rect, app: &ModularApp) {
    frame.render_widget(Clear, area);
    let [header, body, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let title = match &app.current {
        Some(c) => format!(
            " demo │ {} │ recovery {} │ {}",
            app.store_label, c.recovery, c.label
        ),
        None => format!(" demo │ {}", app.store_label),
    };
    let title = shorten(&title, area.width as usize);
    frame.render_widget(Paragraph::new(Span::styled(title, app.theme.dim())), header);
    hint_bar(
        frame,
        hints,
        &app.theme,
        &[
            ("D  Esc", "back"),
            ("n", "next"),
            ("+/-", "tune"),
            ("q", "quit"),
        ],
    );
    let Some(c) = &app.current else {
        let text = Paragraph::new("waiting for the first comparison…")
            .style(app.theme.dim())
            .alignment(Alignment::Center);
        frame.render_widget(text, body);
        return;
    };
    let [exact, prefix, modular] = c.ttft_ms;
    let big = |text: String, size: PixelSize, style| {
        BigText::builder()
            .pixel_size(size)
            .style(style)
            .lines(vec![Line::from(text)])
            .centered()
            .build()
    };
    let tall = body.height >= 22;
    let speedup_rows = if tall { 8 } else { 4 };
    let [_, speedup, caption, labels, times, _, facts, answers] = Layout::vertical([
        Constraint::Length(u16::from(tall)),
        Constraint::Length(speedup_rows),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(body);
    let size = if tall {
        PixelSize::Full
    } else {
        PixelSize::Quadrant
    };
    frame.render_widget(
        big(format!("{:.1}×", exact / modular), size, app.theme.key()),
        speedup,
    );
    let caption_text = format!(
        "faster to the first token than exact prefill · {:.1}× faster than the prefix cache",
        prefix / modular
    );
    frame.render_widget(
        Paragraph::new(caption_text).alignment(Alignment::Center),
        caption,
    );
    let columns =
        |rect: Rect| -> [Rect; 3] { Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(rect) };
    let runs = [
        ("exact prefill", exact, app.theme.exact()),
        ("prefix cache", prefix, app.theme.dim()),
        ("modular", modular, app.theme.cached()),
    ];
    for ((label, ms, style), (label_rect, time_rect)) in runs
        .into_iter()
        .zip(columns(labels).into_iter().zip(columns(times)))
    {
        frame.render_widget(
            Paragraph::new(Span::styled(label, style)).alignment(Alignment::Center),
            label_rect,
        );
        frame.render_widget(big(seconds(ms), PixelSize::Quadrant, style), time_rect);
    }
    let agreement = if c.top1_agree {
        "the same"
    } else {
        "different"
    };
    let kl = if facts.width >= 90 {
        "next-token KL"
    } else {
        "KL"
    };
    let facts_text = format!(
        "{kl} {:.4} · top-1 {agreement} · {} tokens: {} from the store, {} recomputed",
        c.kl, c.tokens, c.cached, c.recomputed
    );
    let facts_style = if c.top1_agree {
        Style::default()
    } else {
        app.theme.error()
    };
    frame.render_widget(
        Paragraph::new(Span::styled(facts_text, facts_style)).alignment(Alignment::Center),
        facts,
    );
    let answer = |who: &str, text: &str| {
        Line::from(vec![
            Span::styled(format!("{who:>8}: "), app.theme.dim()),
            Span::raw(text.trim().to_string()),
        ])
    };
    let lines = vec![
        answer("exact", &c.answers[0]),
        answer("modular", &c.answers[1]),
    ];
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), answers);
}

/// A time for the big digits: milliseconds under a second, else seconds.
fn seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// The history popup (`H`): every run of the session, newest first, one row
/// each with its own setting, speedups and fidelity.
fn draw_history(frame: &mut Frame, area: Rect, app: &ModularApp) {
    let rows = (area.height.saturating_sub(4) as usize).max(1);
    let rect = centred(area, 110, (app.history.len().min(rows) + 3) as u16);
    let width = rect.width.saturating_sub(2) as usize;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "{:<22} {:>9} {:>9} {:>8} {:>6}  prompt",
            "setting", "× exact", "× prefix", "KL", "top-1"
        ),
        app.theme.dim(),
    ))];
    if app.history.is_empty() {
        lines.push(Line::from(Span::styled("no runs yet", app.theme.dim())));
    }
    for h in app.history.iter().take(rows.saturating_sub(1)) {
        let setting = format!("{} · {}", h.recovery, h.positions.name());
        let row = format!(
            "{:<22} {:>8.1}× {:>8.1}× {:>8.4} {:>6}  {}",
            shorten(&setting, 22),
            h.ttft_ms[0] / h.ttft_ms[2],
            h.ttft_ms[1] / h.ttft_ms[2],
            h.kl,
            if h.top1_agree { "same" } else { "differ" },
            h.label
        );
        let style = if h.top1_agree {
            Style::default()
        } else {
            app.theme.error()
        };
        lines.push(Line::from(Span::styled(shorten(&row, width), style)));
    }
    let title = format!("Runs · {} this session, newest first", app.history.len());
    framed(frame, &app.theme, rect, &title, lines);
}
