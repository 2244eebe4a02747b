//! The modular view: a decoder with a module store. The prompt as a strip of
//! modules (cached / rows recomputed / computed), the layer × head grid of
//! how close the question's attention stays to the exact run, TTFT of exact
//! / prefix cache / modular live, both greedy answers side by side; `+`/`-`
//! tune the recovery and re-run at once, `m` cycles recovery and positions,
//! `R` rebuilds the store. The same state runs headless from a key script.
//!
//! - [`state`]: state, keys, clicks, events, clock;
//! - [`view`]: the frame;
//! - [`worker`]: the engine thread.

pub mod state;
pub mod view;
pub mod worker;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyEvent, KeyEventKind, MouseEvent};
use serde::Serialize;

use super::headless::{Scripted, Step, run_script};
use state::ModularApp;
use worker::{Comparison, Event};

/// How long the loop waits for input before looking at the worker again.
const POLL: Duration = Duration::from_millis(25);

/// Runs the view in the terminal until the user quits.
pub fn run_terminal(mut app: ModularApp, events: Receiver<Event>) -> anyhow::Result<()> {
    let (mut terminal, _guard) = super::enter_terminal()?;
    let mut dirty = true;
    while !app.quit {
        if dirty {
            terminal.draw(|frame| view::draw(frame, &mut app))?;
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => app.on_key(key),
                TermEvent::Mouse(mouse) => app.on_mouse(mouse),
                TermEvent::Resize(..) => {}
                _ => continue,
            }
            dirty = true;
        }
        while let Ok(event) = events.try_recv() {
            app.on_event(event);
            dirty = true;
        }
        let before = app.in_flight;
        app.tick(Instant::now());
        dirty |= app.in_flight != before;
    }
    Ok(())
}

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
    /// The latest comparison.
    pub current: Option<Comparison>,
    /// The last frame, one string per row.
    pub screen: Vec<String>,
    /// True when the script quit.
    pub quit: bool,
}

/// The view with its worker's events, as a script drives it.
struct Driven<'a> {
    app: &'a mut ModularApp,
    events: &'a Receiver<Event>,
}

impl Scripted for Driven<'_> {
    fn key(&mut self, key: KeyEvent) {
        self.app.on_key(key);
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        self.app.on_mouse(mouse);
    }

    fn pump(&mut self, wait: Duration) {
        if let Ok(event) = self.events.recv_timeout(wait) {
            self.app.on_event(event);
        }
        while let Ok(event) = self.events.try_recv() {
            self.app.on_event(event);
        }
        self.app.tick(Instant::now());
    }

    fn busy(&self) -> Option<String> {
        match (self.app.in_flight, self.app.job) {
            (Some(_), _) => Some("the prompt's three runs".into()),
            (None, Some(_)) => Some("the rebuild".into()),
            (None, None) => None,
        }
    }

    fn quit(&self) -> bool {
        self.app.quit
    }

    fn draw(&mut self, frame: &mut ratatui::Frame) {
        view::draw(frame, self.app);
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
    let screen = run_script(
        &mut Driven {
            app: &mut app,
            events,
        },
        steps,
        size,
        timeout,
    )?;
    Ok(ModularReport {
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
        current: app.current.clone(),
        screen,
        quit: app.quit,
    })
}
