//! The interactive dashboard (ratatui + crossterm).
//!
//! - [`app`]: state and how keys, clicks and worker events change it;
//! - [`keys`]: the key map and the help table;
//! - [`config`]: the config file and key overrides;
//! - [`view`]: one component per panel and popup;
//! - [`worker`]: the engine thread and background jobs;
//! - [`theme`]: colour and monochrome styles;
//! - [`tally`]: per-head numbers over the stream so far (the corpus view);
//! - [`headless`]: the same dashboard driven by a key script, for scripts
//!   and tests;
//! - [`modular`]: the modular view (a decoder with a module store);
//! - [`shell`]: one app of tabs (Maps, Modules) around both views;
//! - [`setup`]: the Modules tab's default store, prepared on first use.

pub mod app;
pub mod config;
mod export;
pub mod headless;
pub mod keys;
pub mod modular;
pub mod setup;
pub mod shell;
pub mod tally;
pub mod theme;
pub mod view;
pub mod worker;

use std::io::stdout;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent, KeyEvent, KeyEventKind,
    MouseEvent,
};
use crossterm::execute;
use ratatui::layout::Rect;

use app::App;
use worker::Event;

/// How long the loop waits for input before looking at the worker again.
const POLL: Duration = Duration::from_millis(25);

/// Restores the terminal when dropped (also on error; ratatui's panic hook
/// covers panics).
pub(crate) struct TerminalGuard;

/// Takes over the terminal (raw mode, alternate screen, mouse capture) until
/// the guard is dropped.
pub(crate) fn enter_terminal() -> anyhow::Result<(ratatui::DefaultTerminal, TerminalGuard)> {
    let terminal = ratatui::init();
    let guard = TerminalGuard;
    execute!(stdout(), EnableMouseCapture)?;
    Ok((terminal, guard))
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

/// A view the terminal loop and key scripts drive: the dashboard and the
/// modular view both are.
pub trait Interactive {
    /// What its worker thread reports.
    type Event;
    /// A key press.
    fn key(&mut self, key: KeyEvent);
    /// A mouse event.
    fn mouse(&mut self, mouse: MouseEvent);
    /// A worker event.
    fn event(&mut self, event: Self::Event);
    /// Handles the clock; true when that changed what is shown.
    fn advance(&mut self, now: Instant) -> bool;
    /// What a script's `wait` waits for, when anything is running.
    fn busy(&self) -> Option<String>;
    /// True once the user quit.
    fn quit(&self) -> bool;
    /// True while keys go into a text field (a shell then leaves its own
    /// keys, such as the tab digits, to the view).
    fn typing(&self) -> bool;
    /// Draws the view into `area` of the frame.
    fn draw(&mut self, frame: &mut ratatui::Frame, area: Rect);
}

impl Interactive for App {
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
        if self.capturing {
            return Some("the pinned input's maps".into());
        }
        if self.popup() == Some(app::Popup::Neighbours) && self.neighbours.is_none() {
            return Some("the nearest entries".into());
        }
        (self.in_flight > 0 || self.job.is_some() || self.exporting()).then(|| {
            format!(
                "the engine ({} queries, job {:?})",
                self.in_flight,
                self.job.as_ref().map(|j| j.name)
            )
        })
    }

    fn quit(&self) -> bool {
        self.quit
    }

    fn typing(&self) -> bool {
        self.editing
            || matches!(
                self.popup(),
                Some(app::Popup::Database | app::Popup::Search)
            )
    }

    fn draw(&mut self, frame: &mut ratatui::Frame, area: Rect) {
        view::draw_in(frame, area, self);
    }
}

/// Runs a view in the terminal until the user quits: input, the worker's
/// events and the clock, redrawn when something changed (and at least every
/// 250 ms).
pub fn run_terminal<V: Interactive>(mut view: V, events: Receiver<V::Event>) -> anyhow::Result<()> {
    let (mut terminal, _guard) = enter_terminal()?;
    let mut dirty = true;
    let mut last_draw = Instant::now();
    while !view.quit() {
        if dirty || last_draw.elapsed() >= Duration::from_millis(250) {
            terminal.draw(|frame| view.draw(frame, frame.area()))?;
            last_draw = Instant::now();
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => view.key(key),
                TermEvent::Mouse(mouse) => view.mouse(mouse),
                _ => {}
            }
            dirty = true;
        }
        while let Ok(event) = events.try_recv() {
            view.event(event);
            dirty = true;
        }
        dirty |= view.advance(Instant::now());
    }
    Ok(())
}
