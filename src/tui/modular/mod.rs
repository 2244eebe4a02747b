//! The modular view: a decoder with a module store. The prompt as a strip of
//! modules (cached / rows recomputed / computed), the layer × head grid of
//! how close the question's attention stays to the exact run, TTFT of exact
//! / prefix cache / modular live, both greedy answers side by side; `+`/`-`
//! tune the recovery and re-run at once, `m` cycles recovery and positions,
//! `f` shows the session's speed–fidelity frontier, `R` rebuilds the store. The same state runs headless from a key script.
//!
//! - [`state`]: state, keys, clicks, events, clock;
//! - [`view`]: the frame;
//! - [`worker`]: the engine thread;
//! - `export`: `e`, the view as JSON and the session's frontier as plots.

mod export;
pub mod state;
pub mod view;
pub mod worker;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crossterm::event::{KeyEvent, MouseEvent};
use serde::Serialize;

use super::Interactive;
use super::headless::{Step, run_script};
use state::ModularApp;
use worker::{Comparison, Event};

/// What a headless run ends with.
#[derive(Debug, Serialize)]
pub struct ModularReport {
    /// Position assignment.
    pub positions: &'static str,
    /// Recovery.
    pub recovery: String,
    /// Chat template on.
    pub chat: bool,
    /// Stream paused.
    pub paused: bool,
    /// Selected `[layer, head]`.
    pub selected: [usize; 2],
    /// Open popups.
    pub popups: Vec<String>,
    /// The status line.
    pub status: Option<String>,
    /// True when it shows an error.
    pub status_is_error: bool,
    /// Runs of this session, newest first: label and TTFT exact / prefix /
    /// modular.
    pub history: Vec<(String, [f64; 3])>,
    /// The session's speed–fidelity frontier, one point per setting run.
    pub frontier: Vec<state::SessionPoint>,
    /// The latest comparison.
    pub current: Option<Comparison>,
    /// The last frame, one string per row.
    pub screen: Vec<String>,
    /// True when the script quit.
    pub quit: bool,
}

impl Interactive for ModularApp {
    type Event = Event;

    fn key(&mut self, key: KeyEvent) {
        self.on_key(key);
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        self.on_mouse(mouse);
    }

    fn event(&mut self, event: Event) {
        self.on_event(event);
    }

    fn advance(&mut self, now: Instant) -> bool {
        let before = (self.in_flight, self.exporting());
        self.tick(now);
        (self.in_flight, self.exporting()) != before
    }

    fn busy(&self) -> Option<String> {
        match (self.in_flight, self.job) {
            (Some(_), _) => Some("the prompt's three runs".into()),
            (None, Some(_)) => Some("the rebuild".into()),
            (None, None) => self.exporting().then(|| "the export".into()),
        }
    }

    fn quit(&self) -> bool {
        self.quit
    }

    fn typing(&self) -> bool {
        self.editing || self.popup() == Some(state::Popup::Rebuild)
    }

    fn draw(&mut self, frame: &mut ratatui::Frame, area: ratatui::layout::Rect) {
        view::draw_in(frame, area, self);
    }
}

/// Runs `steps` against `app` with its real worker, drawing each step into
/// an in-memory terminal of `size`; waits give up after `timeout`.
pub fn run_headless(
    mut app: ModularApp,
    events: &Receiver<Event>,
    steps: &[Step],
    size: (u16, u16),
    timeout: Duration,
) -> anyhow::Result<ModularReport> {
    let screen = run_script(&mut app, events, steps, size, timeout)?;
    Ok(report(app, screen))
}

/// The view's report: its state after a script, and the last frame.
pub fn report(app: ModularApp, screen: Vec<String>) -> ModularReport {
    ModularReport {
        positions: app.positions.name(),
        recovery: app.recovery.to_string(),
        chat: app.chat,
        paused: app.paused,
        selected: [app.selected.0, app.selected.1],
        popups: app.popups.iter().map(|p| format!("{p:?}")).collect(),
        status_is_error: app.status.as_ref().is_some_and(|s| s.error),
        status: app.status.as_ref().map(|s| s.text.clone()),
        history: app
            .history
            .iter()
            .map(|h| (h.label.clone(), h.ttft_ms))
            .collect(),
        frontier: app.session_frontier(),
        current: app.current.clone(),
        screen,
        quit: app.quit,
    }
}
