//! A view without a terminal: a script of keys (the same events a user
//! sends) drives any [`Interactive`] view — the dashboard's [`App`], the
//! modular view — and its real worker, each step drawn into an in-memory
//! backend; the final state comes back as JSON and, optionally, as the text
//! of the last frame.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;

use super::Interactive;
use super::app::{App, mode_name};
use super::keys::parse_key;
use super::worker::Event;
use crate::engine::Trace;

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key press (`m`, `Enter`, `Ctrl-C`…).
    Key(KeyEvent),
    /// Characters typed one by one (`type:TEXT`).
    Type(String),
    /// A left click at a cell (`click:X:Y`, or `click:X,Y` where the
    /// script is not split at commas).
    Click(u16, u16),
    /// Wait until no query and no job is running (`wait`).
    Wait,
    /// Let time pass (`sleep:MS`), e.g. for the stream.
    Sleep(Duration),
}

/// Parses script tokens: keys as [`parse_key`] names them, `type:TEXT`,
/// `run:TEXT` (`i`, the text, `Enter`, `wait`), `click:X:Y` (or `click:X,Y`),
/// `wait`, `sleep:MS`.
pub fn parse_script(tokens: &[String]) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for token in tokens {
        if let Some(text) = token.strip_prefix("type:") {
            steps.push(Step::Type(text.to_string()));
        } else if let Some(text) = token.strip_prefix("run:") {
            steps.push(Step::Key(parse_key("i")?));
            steps.push(Step::Type(text.to_string()));
            steps.push(Step::Key(parse_key("Enter")?));
            steps.push(Step::Wait);
        } else if let Some(at) = token.strip_prefix("click:") {
            // `--keys` splits at commas, so the command line spells it X:Y.
            let (x, y) = at
                .split_once([':', ','])
                .and_then(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
                .ok_or_else(|| anyhow::anyhow!("bad step `{token}`: use click:X:Y"))?;
            steps.push(Step::Click(x, y));
        } else if let Some(ms) = token.strip_prefix("sleep:") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| anyhow::anyhow!("bad step `{token}`: use sleep:MILLISECONDS"))?;
            steps.push(Step::Sleep(Duration::from_millis(ms)));
        } else if token == "wait" {
            steps.push(Step::Wait);
        } else {
            steps.push(Step::Key(parse_key(token)?));
        }
    }
    Ok(steps)
}

/// What a headless run ends with.
#[derive(Debug, Serialize)]
pub struct Report {
    /// exact, cached or shadow.
    pub mode: &'static str,
    /// The policy in service.
    pub policy: String,
    /// Global threshold scale.
    pub scale: f32,
    /// Per-layer threshold scales.
    pub layer_scale: Vec<f32>,
    /// Database entries (`None`: no database).
    pub db_entries: Option<usize>,
    /// Selected `[layer, head]`.
    pub selected: [usize; 2],
    /// Focused panel.
    pub focus: &'static str,
    /// Open popups, top last.
    pub popups: Vec<String>,
    /// Stream paused.
    pub paused: bool,
    /// The running job, if any.
    pub job: Option<String>,
    /// The status line.
    pub status: Option<String>,
    /// True when the status line shows an error.
    pub status_is_error: bool,
    /// This session's threshold checks on the calibration split.
    pub checks: Vec<crate::plot::SweepPoint>,
    /// Session hit rate.
    pub hit_rate: Option<f64>,
    /// Texts of the history, newest first.
    pub history: Vec<String>,
    /// The latest trace.
    pub current: Option<Trace>,
    /// The last frame's text, one string per row.
    pub screen: Vec<String>,
    /// True when the script quit the dashboard.
    pub quit: bool,
}

/// Runs `steps` against `view`, drawing each step into an in-memory
/// terminal of `size`; waits give up after `timeout`. Returns the last
/// frame's rows.
pub fn run_script<V: Interactive>(
    view: &mut V,
    events: &Receiver<V::Event>,
    steps: &[Step],
    size: (u16, u16),
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut terminal = Terminal::new(TestBackend::new(size.0, size.1))?;
    terminal.draw(|frame| view.draw(frame, frame.area()))?;
    for step in steps {
        if view.quit() {
            break;
        }
        match step {
            Step::Key(key) => view.key(*key),
            Step::Type(text) => {
                for c in text.chars() {
                    view.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
                }
            }
            Step::Click(x, y) => view.mouse(MouseEvent {
                kind: MouseEventKind::Down(MouseButton::Left),
                column: *x,
                row: *y,
                modifiers: KeyModifiers::NONE,
            }),
            Step::Wait => wait_idle(view, events, timeout)?,
            Step::Sleep(d) => {
                let end = Instant::now() + *d;
                while Instant::now() < end {
                    pump(view, events, Duration::from_millis(10));
                }
            }
        }
        pump(view, events, Duration::ZERO);
        terminal.draw(|frame| view.draw(frame, frame.area()))?;
    }
    Ok(screen_text(terminal.backend()))
}

/// Runs `steps` against `app`; waits give up after `timeout`.
pub fn run(
    mut app: App,
    events: &Receiver<Event>,
    steps: &[Step],
    size: (u16, u16),
    timeout: Duration,
) -> anyhow::Result<Report> {
    let screen = run_script(&mut app, events, steps, size, timeout)?;
    Ok(report(app, screen))
}

/// Handles the worker's events (waiting up to `wait` for the first) and the
/// clock.
pub fn pump<V: Interactive>(view: &mut V, events: &Receiver<V::Event>, wait: Duration) {
    if let Ok(event) = events.recv_timeout(wait) {
        view.event(event);
    }
    while let Ok(event) = events.try_recv() {
        view.event(event);
    }
    view.advance(Instant::now());
}

/// Waits until nothing is running in `view`.
pub fn wait_idle<V: Interactive>(
    view: &mut V,
    events: &Receiver<V::Event>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while let Some(what) = view.busy() {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "timed out after {:.0} s waiting for {what}: raise --timeout",
            timeout.as_secs_f64()
        );
        pump(view, events, Duration::from_millis(20));
    }
    Ok(())
}

/// The rows of a test backend's buffer as strings.
pub fn screen_text(backend: &TestBackend) -> Vec<String> {
    let buffer = backend.buffer();
    let width = buffer.area.width as usize;
    buffer
        .content()
        .chunks(width)
        .map(|row| {
            row.iter()
                .map(|cell| cell.symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

/// The dashboard's report: its state after a script, and the last frame.
pub fn report(app: App, screen: Vec<String>) -> Report {
    Report {
        mode: mode_name(app.mode),
        policy: app.policy.name.clone(),
        scale: app.scale,
        layer_scale: app.layer_scale.clone(),
        db_entries: app.db.as_ref().map(|db| db.entries().len()),
        selected: [app.selected.0, app.selected.1],
        focus: app.focus.title(),
        popups: app.popups.iter().map(|p| format!("{p:?}")).collect(),
        paused: app.stream.paused,
        job: app.job.as_ref().map(|j| j.name.to_string()),
        status: app.status.as_ref().map(|s| s.text.clone()),
        status_is_error: app.status.as_ref().is_some_and(|s| s.error),
        checks: app.checks.clone(),
        hit_rate: app.session_hit_rate(),
        history: app.history.iter().map(|h| h.text.clone()).collect(),
        current: app.current.as_ref().map(|c| c.trace.clone()),
        screen,
        quit: app.quit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_into_steps() {
        let tokens: Vec<String> = ["m", "run:a b", "click:3,4", "sleep:5", "Esc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let steps = parse_script(&tokens).unwrap();
        assert_eq!(steps.len(), 8);
        assert_eq!(steps[2], Step::Type("a b".into()));
        assert_eq!(steps[5], Step::Click(3, 4));
        assert!(parse_script(&["click:x".to_string()]).is_err());
        assert!(parse_script(&["Nope".to_string()]).is_err());
    }
}
