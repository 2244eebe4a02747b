//! The interactive dashboard (ratatui + crossterm).
//!
//! - [`app`]: state and how keys, clicks and worker events change it;
//! - [`keys`]: the key map and the help table;
//! - [`view`]: one component per panel and popup;
//! - [`worker`]: the engine thread and background jobs;
//! - [`theme`]: colour and monochrome styles;
//! - [`headless`]: the same dashboard driven by a key script, for scripts
//!   and tests;
//! - [`modular`]: the modular view (a decoder with a module store).

pub mod app;
mod export;
pub mod headless;
pub mod keys;
pub mod modular;
pub mod theme;
pub mod view;
pub mod worker;

use std::io::stdout;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent, KeyEventKind,
};
use crossterm::execute;

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

/// Runs the dashboard in the terminal until the user quits.
pub fn run_terminal(mut app: App, events: Receiver<Event>) -> anyhow::Result<()> {
    let (mut terminal, _guard) = enter_terminal()?;
    let mut dirty = true;
    let mut last_draw = Instant::now();
    while !app.quit {
        if dirty || last_draw.elapsed() >= Duration::from_millis(250) {
            terminal.draw(|frame| view::draw(frame, &mut app))?;
            last_draw = Instant::now();
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => app.on_key(key),
                TermEvent::Mouse(mouse) => app.on_mouse(mouse),
                _ => {}
            }
            dirty = true;
        }
        while let Ok(event) = events.try_recv() {
            app.on_event(event);
            dirty = true;
        }
        let before = (app.in_flight, app.exporting());
        app.tick(Instant::now());
        dirty |= (app.in_flight, app.exporting()) != before;
    }
    Ok(())
}
