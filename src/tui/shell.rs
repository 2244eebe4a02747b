//! One app, several tabs: *Maps* (the map-cache dashboard) and *Modules*
//! (the modular view), switched with `1`/`2` or a click on the tab bar.
//! Every tab keeps its own engine thread, state and stream: the shell
//! forwards each worker's events to its tab whether shown or not, so jobs
//! (a rebuild, a calibration) and running prompts go on in a hidden tab,
//! while only the shown tab's clock runs — a hidden tab's stream waits, so
//! it never competes with the timings on screen. The shell owns only the
//! tab bar and the switching; each tab draws, and handles keys and clicks,
//! below it.
//!
//! A Modules tab without a store shows what it needs; on first use (its
//! first showing) it prepares the default store in the background
//! ([`super::setup`]), with progress, and Esc cancels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::Interactive;
use super::app::App;
use super::modular::state::{ModularApp, ModularConfig};
use super::modular::worker as modular_worker;
use super::setup::{self, Ready};
use super::theme::Theme;
use super::view::{framed_panel, hint_bar, job_gauge};
use super::worker;
use crate::modules::{Positions, Recovery};

/// What any tab's worker reports, tagged with the tab kind.
pub enum ShellEvent {
    /// The Maps tab's engine.
    Maps(worker::Event),
    /// The Modules tab's engine.
    Modules(modular_worker::Event),
    /// The Modules tab's first-use preparation.
    Setup(setup::Event),
}

/// How the Modules tab runs once its store is ready.
#[derive(Debug, Clone)]
pub struct ModulesSettings {
    /// Theme.
    pub theme: Theme,
    /// Position assignment.
    pub positions: Positions,
    /// Recovery.
    pub recovery: Recovery,
    /// Chat template.
    pub chat: bool,
    /// Between stream prompts.
    pub interval: Duration,
    /// Start paused (headless runs).
    pub paused: bool,
    /// Where `e` writes.
    pub export_dir: std::path::PathBuf,
}

/// A Modules tab still without a store.
pub struct Waiting {
    /// Why it waits, and what fixes it.
    message: String,
    /// Prepares the default store when the tab is first shown.
    auto_prepare: bool,
    /// The preparation's stage and progress, once started.
    stage: Option<String>,
    progress: Option<(usize, usize)>,
    cancel: Option<Arc<AtomicBool>>,
    /// The last failure.
    error: Option<String>,
    settings: ModulesSettings,
}

impl Waiting {
    /// A tab that prepares the default store on first use.
    pub fn default_store(settings: ModulesSettings) -> Self {
        let message = "no module store yet: preparing the default one (SmolLM2, a multi-document \
                       and passkey workload over the Rotten Tomatoes plots) — about a minute after \
                       the fetch; or run with --store DIR";
        Self {
            auto_prepare: true,
            ..Self::unavailable(message.into(), settings)
        }
    }

    /// A tab that cannot serve, with the reason.
    pub fn unavailable(message: String, settings: ModulesSettings) -> Self {
        Self {
            message,
            auto_prepare: false,
            stage: None,
            progress: None,
            cancel: None,
            error: None,
            settings,
        }
    }
}

/// What a tab shows.
pub enum TabView {
    /// The map-cache dashboard.
    Maps(Box<App>),
    /// The modular view.
    Modules(Box<ModularApp>),
    /// A Modules tab waiting for its store.
    Waiting(Box<Waiting>),
}

/// One tab.
pub struct Tab {
    /// Its name in the tab bar.
    pub title: &'static str,
    /// What it serves (model, database or store).
    pub detail: String,
    /// Its view.
    pub view: TabView,
}

/// The app: tabs and the one shown.
pub struct Shell {
    tabs: Vec<Tab>,
    active: usize,
    theme: Theme,
    quit: bool,
    /// Where each tab's title landed in the bar (clicks).
    bar: Vec<(usize, Rect)>,
    /// Feeds the shell's event channel (for workers started later).
    events: Sender<ShellEvent>,
}

/// Forwards every event of `rx` into `tx`, tagged by `tag`, on a thread.
pub fn forward<E: Send + 'static>(
    rx: Receiver<E>,
    tx: Sender<ShellEvent>,
    tag: fn(E) -> ShellEvent,
) {
    std::thread::spawn(move || {
        for event in rx {
            if tx.send(tag(event)).is_err() {
                break;
            }
        }
    });
}

impl Shell {
    /// The app with `tabs`; nothing is shown (and no tab starts work)
    /// until [`Self::show`].
    pub fn new(tabs: Vec<Tab>, theme: Theme, events: Sender<ShellEvent>) -> Self {
        Self {
            active: 0,
            tabs,
            theme,
            quit: false,
            bar: Vec::new(),
            events,
        }
    }

    /// Shows tab `index` (a waiting Modules tab starts preparing its store).
    pub fn show(&mut self, index: usize) {
        self.switch(index);
    }

    /// The tabs.
    pub fn tabs(&self) -> &[Tab] {
        &self.tabs
    }

    /// The index of the shown tab.
    pub fn active(&self) -> usize {
        self.active
    }

    fn switch(&mut self, to: usize) {
        if to < self.tabs.len() {
            self.active = to;
            self.shown();
        }
    }

    /// A waiting Modules tab starts preparing its store the first time it
    /// is shown.
    fn shown(&mut self) {
        let events = self.events.clone();
        if let TabView::Waiting(w) = &mut self.tabs[self.active].view
            && w.auto_prepare
            && w.cancel.is_none()
        {
            w.auto_prepare = false;
            let cancel = Arc::new(AtomicBool::new(false));
            w.cancel = Some(cancel.clone());
            w.stage = Some("starting".into());
            let dir = match crate::fetch::Fetcher::from_env() {
                Ok(f) => setup::default_dir(&f),
                Err(e) => {
                    w.error = Some(format!("{e:#}"));
                    w.cancel = None;
                    return;
                }
            };
            let (tx, rx) = std::sync::mpsc::channel();
            forward(rx, events, ShellEvent::Setup);
            setup::spawn(dir, cancel, tx);
        }
    }

    /// Turns waiting tab `index` into the modular view over `ready`.
    pub fn open_modules(&mut self, index: usize, ready: Ready) {
        let TabView::Waiting(w) = &self.tabs[index].view else {
            return;
        };
        let s = w.settings.clone();
        let m = ready.store.manifest();
        let store_label = format!(
            "{} · {} modules · {}",
            m.schema_name,
            m.modules,
            m.encoding.name()
        );
        let config = ModularConfig {
            theme: s.theme,
            shape: *ready.model.shape(),
            store_label: store_label.clone(),
            positions: s.positions,
            recovery: s.recovery,
            chat: s.chat,
            prompts: ready.prompts,
            interval: s.interval,
            schema_path: ready.schema_path,
            paused: s.paused,
            export_dir: s.export_dir,
        };
        let spawned = modular_worker::spawn(ready.model, ready.store);
        forward(spawned.events, self.events.clone(), ShellEvent::Modules);
        let app = ModularApp::new(config, spawned.requests);
        self.tabs[index].detail = format!("smollm2 · {store_label}");
        self.tabs[index].view = TabView::Modules(Box::new(app));
    }

    fn index_of(&self, pick: fn(&TabView) -> bool) -> Option<usize> {
        self.tabs.iter().position(|t| pick(&t.view))
    }

    fn draw_bar(&mut self, frame: &mut Frame, area: Rect) {
        self.bar.clear();
        let mut spans = Vec::new();
        let mut x = area.x;
        for (i, tab) in self.tabs.iter().enumerate() {
            let text = format!(" {} {} · {} ", i + 1, tab.title, tab.detail);
            let width = text.chars().count() as u16;
            let style = if i == self.active {
                self.theme.selected()
            } else {
                self.theme.dim()
            };
            self.bar.push((i, Rect::new(x, area.y, width, 1)));
            x = x.saturating_add(width + 1);
            spans.push(Span::styled(text, style));
            spans.push(Span::raw("│"));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_waiting(frame: &mut Frame, area: Rect, theme: &Theme, w: &Waiting) {
        let [body, hints] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let mut lines = vec![Line::from(w.message.clone()), Line::from("")];
        if let Some(stage) = &w.stage {
            let mut spans = vec![Span::raw(format!("{stage} "))];
            if let Some((done, total)) = w.progress {
                spans.extend(job_gauge(theme, "modules", done, total));
            }
            lines.push(Line::from(spans));
        }
        if let Some(error) = &w.error {
            lines.push(Line::from(Span::styled(error.clone(), theme.error())));
        }
        let block = framed_panel(theme, true, "Modules");
        frame.render_widget(
            Paragraph::new(lines).wrap(Wrap { trim: true }).block(block),
            body,
        );
        let keys: &[(&str, &str)] = &[("1 2", "tabs"), ("Esc", "cancel"), ("q", "quit")];
        hint_bar(frame, hints, theme, keys);
    }
}

impl Interactive for Shell {
    type Event = ShellEvent;

    fn key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        let typing = self.typing();
        if let KeyCode::Char(c @ '1'..='9') = key.code
            && !typing
        {
            self.switch(c as usize - '1' as usize);
            return;
        }
        match &mut self.tabs[self.active].view {
            TabView::Maps(app) => app.key(key),
            TabView::Modules(app) => app.key(key),
            TabView::Waiting(w) => match key.code {
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Esc => {
                    if let Some(cancel) = &w.cancel {
                        cancel.store(true, Ordering::Relaxed);
                        w.stage = Some("cancelling…".into());
                    }
                }
                _ => {}
            },
        }
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        if matches!(mouse.kind, MouseEventKind::Down(_))
            && let Some(&(i, _)) = self.bar.iter().find(|(_, r)| {
                r.y == mouse.row && mouse.column >= r.x && mouse.column < r.x + r.width
            })
        {
            self.switch(i);
            return;
        }
        match &mut self.tabs[self.active].view {
            TabView::Maps(app) => app.mouse(mouse),
            TabView::Modules(app) => app.mouse(mouse),
            TabView::Waiting(_) => {}
        }
    }

    fn event(&mut self, event: ShellEvent) {
        match event {
            ShellEvent::Maps(e) => {
                if let Some(i) = self.index_of(|v| matches!(v, TabView::Maps(_)))
                    && let TabView::Maps(app) = &mut self.tabs[i].view
                {
                    app.event(e);
                }
            }
            ShellEvent::Modules(e) => {
                if let Some(i) = self.index_of(|v| matches!(v, TabView::Modules(_)))
                    && let TabView::Modules(app) = &mut self.tabs[i].view
                {
                    app.event(e);
                }
            }
            ShellEvent::Setup(e) => {
                let Some(i) = self.index_of(|v| matches!(v, TabView::Waiting(_))) else {
                    return;
                };
                let TabView::Waiting(w) = &mut self.tabs[i].view else {
                    return;
                };
                match e {
                    setup::Event::Stage(stage) => {
                        w.stage = Some(stage);
                        w.progress = None;
                    }
                    setup::Event::Progress { done, total } => w.progress = Some((done, total)),
                    setup::Event::Done(Ok(ready)) => self.open_modules(i, *ready),
                    setup::Event::Done(Err(e)) => {
                        w.cancel = None;
                        w.stage = None;
                        w.error = Some(format!(
                            "{e} — switch tabs and back to retry, or pass --store DIR"
                        ));
                        w.auto_prepare = true;
                    }
                }
            }
        }
    }

    fn advance(&mut self, now: Instant) -> bool {
        match &mut self.tabs[self.active].view {
            TabView::Maps(app) => app.advance(now),
            TabView::Modules(app) => app.advance(now),
            TabView::Waiting(_) => false,
        }
    }

    fn busy(&self) -> Option<String> {
        self.tabs.iter().find_map(|tab| {
            let busy = match &tab.view {
                TabView::Maps(app) => app.busy(),
                TabView::Modules(app) => app.busy(),
                TabView::Waiting(w) => w.cancel.as_ref().map(|_| "the default store".to_string()),
            };
            busy.map(|b| format!("{}: {b}", tab.title))
        })
    }

    fn quit(&self) -> bool {
        self.quit
            || match &self.tabs[self.active].view {
                TabView::Maps(app) => app.quit(),
                TabView::Modules(app) => app.quit(),
                TabView::Waiting(_) => false,
            }
    }

    fn typing(&self) -> bool {
        match &self.tabs[self.active].view {
            TabView::Maps(app) => app.typing(),
            TabView::Modules(app) => app.typing(),
            TabView::Waiting(_) => false,
        }
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect) {
        let [bar, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        self.draw_bar(frame, bar);
        let theme = self.theme;
        match &mut self.tabs[self.active].view {
            TabView::Maps(app) => app.draw(frame, body),
            TabView::Modules(app) => app.draw(frame, body),
            TabView::Waiting(w) => Self::draw_waiting(frame, body, &theme, w),
        }
    }
}

impl Shell {
    /// The headless report after a script left the shell with `screen`:
    /// the shown tab's own report (as its view's headless run gives it, so
    /// scripts of one view read the same fields), the last frame, `tab` (the
    /// shown tab's title) and `tabs` (every tab's title, what it serves and
    /// its state).
    pub fn report(self, screen: Vec<String>) -> serde_json::Value {
        let quit = Interactive::quit(&self);
        let active = self.active;
        let states: Vec<(&'static str, String, serde_json::Value)> = self
            .tabs
            .into_iter()
            .map(|tab| {
                let state = match tab.view {
                    TabView::Maps(app) => {
                        serde_json::to_value(super::headless::report(*app, Vec::new()))
                    }
                    TabView::Modules(app) => {
                        serde_json::to_value(super::modular::report(*app, Vec::new()))
                    }
                    TabView::Waiting(w) => Ok(serde_json::json!({
                        "waiting": w.message,
                        "stage": w.stage,
                        "progress": w.progress,
                        "error": w.error,
                    })),
                };
                let mut state = state.unwrap_or(serde_json::Value::Null);
                if let Some(map) = state.as_object_mut() {
                    map.remove("screen");
                }
                (tab.title, tab.detail, state)
            })
            .collect();
        let mut report = states[active].2.clone();
        if !report.is_object() {
            report = serde_json::json!({});
        }
        report["tab"] = states[active].0.into();
        report["tabs"] = states
            .iter()
            .map(|(title, serves, state)| {
                serde_json::json!({"title": title, "serves": serves, "state": state})
            })
            .collect();
        report["screen"] = screen.into();
        report["quit"] = quit.into();
        report
    }
}
