//! The modular view's state and how keys, clicks, worker events and the
//! clock change it (nothing here touches the terminal).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::worker::{Comparison, Event, Request, prompt_label};
use crate::model::ModelShape;
use crate::modules::{Positions, PromptSpec, Recovery};
use crate::tui::theme::Theme;

/// Recent runs kept.
pub const HISTORY: usize = 32;

/// A panel that can hold the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The prompt input.
    Query,
    /// The prompt as a strip of modules.
    Strip,
    /// Time to first token.
    Latency,
    /// The layer × head grid.
    Grid,
    /// The answers side by side.
    Answers,
}

impl Panel {
    /// Focus order (Tab).
    pub const ORDER: [Panel; 5] = [
        Panel::Query,
        Panel::Strip,
        Panel::Latency,
        Panel::Grid,
        Panel::Answers,
    ];
}

/// A popup (Esc closes the top one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popup {
    /// Every key.
    Help,
    /// The rebuild form.
    Rebuild,
    /// The current comparison in large digits, for a projector.
    Demo,
    /// Every run of the session with its own setting.
    History,
}

/// Every key of the view, for the help popup.
pub const HELP: &[(&str, &str)] = &[
    ("q  Ctrl-C", "quit"),
    ("?  F1", "this help"),
    ("Esc", "close a popup · stop typing · cancel the rebuild"),
    (
        "Tab  Shift-Tab  click",
        "focus the next / previous / clicked panel",
    ),
    ("arrows  hjkl", "select a layer and head in the grid"),
    (
        "i  /",
        "type a prompt: a JSON record or plain text; Enter runs it",
    ),
    ("Space", "pause or resume the prompt stream"),
    ("n", "run the next prompt of the file now"),
    (
        "+  -",
        "more or less recovery (K, R or M of the kind); re-runs",
    ),
    (
        "m",
        "cycle none → first → select → probe → probe-modules, then positions",
    ),
    (
        "f",
        "the session's speed–fidelity frontier in the grid panel (toggle)",
    ),
    ("c", "wrap prompts in the chat template (toggle); re-runs"),
    (
        "D",
        "demo view: the comparison in large digits for a room (toggle)",
    ),
    (
        "H",
        "every run of the session: its setting, speedups, KL, top-1",
    ),
    (
        "e",
        "export: the view as JSON, the session's frontier as PNG + SVG",
    ),
    (
        "R",
        "rebuild the store from a schema (Enter starts, Esc cancels)",
    ),
];

/// Hints at the bottom.
pub const HINTS: &[(&str, &str)] = &[
    ("q", "quit"),
    ("?", "help"),
    ("i", "type"),
    ("+/-", "tune"),
    ("m", "mode"),
    ("f", "frontier"),
    ("R", "rebuild"),
    ("D", "demo"),
    ("Spc", "pause"),
];

/// A finished run in the history.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The prompt's label.
    pub label: String,
    /// TTFT exact, prefix, modular (ms).
    pub ttft_ms: [f64; 3],
    /// Same next token as exact.
    pub top1_agree: bool,
    /// Next-token KL from exact.
    pub kl: f64,
    /// The positions it ran with.
    pub positions: Positions,
    /// The recovery it ran with.
    pub recovery: Recovery,
}

/// One setting of the session on its speed–fidelity frontier.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionPoint {
    /// `positions · recovery`.
    pub setting: String,
    /// Runs with it.
    pub runs: usize,
    /// Summed exact TTFT ÷ summed modular TTFT.
    pub speedup: f64,
    /// Mean next-token KL.
    pub kl: f64,
    /// Share of runs with the exact next token.
    pub top1: f64,
    /// The current setting.
    pub current: bool,
}

/// The status line.
#[derive(Debug, Clone)]
pub struct Status {
    /// Its text.
    pub text: String,
    /// An error.
    pub error: bool,
}

/// The modular view.
pub struct ModularApp {
    /// Colours or glyphs.
    pub theme: Theme,
    /// The model's layers and heads.
    pub shape: ModelShape,
    /// Store name and module count, for the header.
    pub store_label: String,
    /// Position assignment.
    pub positions: Positions,
    /// Recovery.
    pub recovery: Recovery,
    /// Wrap prompts in the chat template.
    pub chat: bool,
    /// The prompts file's prompts (the stream).
    pub prompts: Vec<PromptSpec>,
    /// The next prompt the stream sends.
    pub next_prompt: usize,
    /// Stream paused.
    pub paused: bool,
    /// Time between stream prompts (after the previous finished).
    pub interval: Duration,
    /// When the last run finished.
    pub last_done: Option<Instant>,
    /// Typed text.
    pub input: String,
    /// Typing.
    pub editing: bool,
    /// The prompt last sent (re-run on `+`, `-`, `m`).
    pub last_prompt: Option<PromptSpec>,
    /// The request in flight.
    pub in_flight: Option<u64>,
    seq: u64,
    /// The latest result.
    pub current: Option<Comparison>,
    /// Recent runs, newest first.
    pub history: VecDeque<RunSummary>,
    /// The grid panel shows the session's frontier instead.
    pub show_frontier: bool,
    /// Selected layer and head.
    pub selected: (usize, usize),
    /// First grid row shown.
    pub grid_scroll: usize,
    /// Focused panel.
    pub focus: Panel,
    /// Open popups.
    pub popups: Vec<Popup>,
    /// The schema the rebuild form uses.
    pub schema_path: String,
    /// Rebuild progress (done, total) while it runs.
    pub job: Option<(usize, usize)>,
    cancel: Option<Arc<AtomicBool>>,
    /// The status line.
    pub status: Option<Status>,
    /// The user quit.
    pub quit: bool,
    /// Where each panel was drawn (mouse clicks).
    pub areas: Vec<(Panel, Rect)>,
    /// Where `e` writes.
    pub export_dir: PathBuf,
    /// The export being written.
    export: Option<crate::tui::export::Written>,
    requests: Sender<Request>,
}

/// How the view starts.
#[derive(Debug, Clone)]
pub struct ModularConfig {
    /// Theme.
    pub theme: Theme,
    /// The model's sizes.
    pub shape: ModelShape,
    /// Store name and modules, for the header.
    pub store_label: String,
    /// Positions.
    pub positions: Positions,
    /// Recovery.
    pub recovery: Recovery,
    /// Chat template on.
    pub chat: bool,
    /// The stream's prompts.
    pub prompts: Vec<PromptSpec>,
    /// Time between stream prompts.
    pub interval: Duration,
    /// The rebuild form's schema.
    pub schema_path: PathBuf,
    /// Start with the stream paused (headless scripts).
    pub paused: bool,
    /// Where `e` writes.
    pub export_dir: PathBuf,
}

impl Drop for ModularApp {
    /// Leaving stops a running rebuild (its staging directory is removed and
    /// the old store stays).
    fn drop(&mut self) {
        if let Some(cancel) = &self.cancel {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

impl ModularApp {
    /// A view sending its requests to `requests`.
    pub fn new(config: ModularConfig, requests: Sender<Request>) -> Self {
        Self {
            theme: config.theme,
            shape: config.shape,
            store_label: config.store_label,
            positions: config.positions,
            recovery: config.recovery,
            chat: config.chat,
            paused: config.paused || config.prompts.is_empty(),
            prompts: config.prompts,
            next_prompt: 0,
            interval: config.interval,
            last_done: None,
            input: String::new(),
            editing: false,
            last_prompt: None,
            in_flight: None,
            seq: 0,
            current: None,
            history: VecDeque::new(),
            show_frontier: false,
            selected: (0, 0),
            grid_scroll: 0,
            focus: Panel::Query,
            popups: Vec::new(),
            schema_path: config.schema_path.display().to_string(),
            job: None,
            cancel: None,
            status: None,
            quit: false,
            areas: Vec::new(),
            export_dir: config.export_dir,
            export: None,
            requests,
        }
    }

    /// `e`: starts writing the view to the export directory.
    fn start_export(&mut self) {
        if self.export.is_some() {
            return self.say("an export is already being written", false);
        }
        match super::export::export(self) {
            Ok(rx) => {
                self.export = Some(rx);
                self.say(
                    format!("exporting to {}…", self.export_dir.display()),
                    false,
                );
            }
            Err(e) => self.say(format!("{e:#}"), true),
        }
    }

    /// Reports a finished export.
    fn poll_export(&mut self) {
        let Some(rx) = &self.export else { return };
        let Ok(result) = rx.try_recv() else { return };
        self.export = None;
        match result {
            Ok(files) => {
                let names: Vec<String> = files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                self.say(
                    format!(
                        "wrote {} to {}",
                        names.join(", "),
                        self.export_dir.display()
                    ),
                    false,
                );
            }
            Err(e) => self.say(format!("export failed: {e:#}"), true),
        }
    }

    /// True while an export is being written.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
        });
    }

    /// The top popup.
    pub fn popup(&self) -> Option<Popup> {
        self.popups.last().copied()
    }

    /// Sends `prompt` to the worker with the current settings.
    pub fn send(&mut self, prompt: PromptSpec) {
        self.seq += 1;
        let request = Request::Run {
            seq: self.seq,
            prompt: prompt.clone(),
            positions: self.positions,
            recovery: self.recovery,
            chat: self.chat,
        };
        if self.requests.send(request).is_err() {
            self.say("the engine thread has stopped", true);
            return;
        }
        self.in_flight = Some(self.seq);
        self.say(format!("running {}", prompt_label(&prompt)), false);
        self.last_prompt = Some(prompt);
    }

    fn rerun(&mut self) {
        if let Some(prompt) = self.last_prompt.clone() {
            self.send(prompt);
        }
    }

    fn send_next(&mut self) {
        if self.prompts.is_empty() {
            self.say("no prompts file: type a prompt with i", true);
            return;
        }
        let prompt = self.prompts[self.next_prompt % self.prompts.len()].clone();
        self.next_prompt += 1;
        self.send(prompt);
    }

    /// Handles the clock: the stream sends the next prompt once the previous
    /// run has finished and the interval has passed.
    pub fn tick(&mut self, now: Instant) {
        self.poll_export();
        let idle = self.in_flight.is_none() && self.job.is_none() && !self.editing;
        let due = self
            .last_done
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if idle && !self.paused && due && !self.prompts.is_empty() {
            self.send_next();
        }
    }

    /// Handles a worker event.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Ran { seq, result } => {
                if Some(seq) != self.in_flight {
                    return;
                }
                self.in_flight = None;
                self.last_done = Some(Instant::now());
                match result {
                    Ok(c) => {
                        self.history.push_front(RunSummary {
                            label: c.label.clone(),
                            ttft_ms: c.ttft_ms,
                            top1_agree: c.top1_agree,
                            kl: c.kl,
                            positions: c.positions,
                            recovery: c.recovery,
                        });
                        self.history.truncate(HISTORY);
                        self.say(
                            format!(
                                "{:.1}× over exact, {:.1}× over the prefix cache",
                                c.ttft_ms[0] / c.ttft_ms[2],
                                c.ttft_ms[1] / c.ttft_ms[2]
                            ),
                            false,
                        );
                        self.current = Some(*c);
                    }
                    Err(e) => self.say(e, true),
                }
            }
            Event::Progress { done, total } => self.job = Some((done, total)),
            Event::Rebuilt(result) => {
                self.job = None;
                self.cancel = None;
                match result {
                    Ok(summary) => {
                        self.say(summary, false);
                        self.rerun();
                    }
                    Err(e) => self.say(e, true),
                }
            }
        }
    }

    /// Closes `popup` when it is on top, else opens it.
    fn toggle(&mut self, popup: Popup) {
        match self.popup() == Some(popup) {
            true => {
                self.popups.pop();
            }
            false => self.popups.push(popup),
        }
    }

    /// Handles a key.
    pub fn on_key(&mut self, key: KeyEvent) {
        let ctrl_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            self.quit = true;
            return;
        }
        if self.editing {
            return self.on_typing(key);
        }
        if self.popup() == Some(Popup::Rebuild) {
            return self.on_rebuild_form(key);
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.popups.push(Popup::Help),
            KeyCode::Esc => {
                if self.popups.pop().is_none()
                    && let Some(cancel) = &self.cancel
                {
                    cancel.store(true, Ordering::Relaxed);
                    self.say("cancelling the rebuild…", false);
                }
            }
            KeyCode::Tab => self.cycle_focus(1),
            KeyCode::BackTab => self.cycle_focus(Panel::ORDER.len() - 1),
            KeyCode::Char('i') | KeyCode::Char('/') => {
                self.editing = true;
                self.focus = Panel::Query;
            }
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                self.say(
                    if self.paused {
                        "stream paused"
                    } else {
                        "stream resumed"
                    },
                    false,
                );
            }
            KeyCode::Char('n') => self.send_next(),
            KeyCode::Char('+') | KeyCode::Char('=') => self.step_recovery(1),
            KeyCode::Char('-') => self.step_recovery(-1),
            KeyCode::Char('m') => self.cycle_mode(),
            KeyCode::Char('f') => {
                self.show_frontier = !self.show_frontier;
                self.focus = Panel::Grid;
            }
            KeyCode::Char('c') => {
                self.chat = !self.chat;
                self.say(
                    format!("chat template {}", if self.chat { "on" } else { "off" }),
                    false,
                );
                self.rerun();
            }
            KeyCode::Char('R') => self.popups.push(Popup::Rebuild),
            KeyCode::Char('D') => self.toggle(Popup::Demo),
            KeyCode::Char('H') => self.toggle(Popup::History),
            KeyCode::Char('e') => self.start_export(),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1, 0),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1, 0),
            KeyCode::Left | KeyCode::Char('h') => self.move_selection(0, -1),
            KeyCode::Right | KeyCode::Char('l') => self.move_selection(0, 1),
            _ => {}
        }
    }

    fn on_typing(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc => self.editing = false,
            KeyCode::Enter => {
                self.editing = false;
                let text = std::mem::take(&mut self.input);
                match PromptSpec::from_arg(&text) {
                    Ok(prompt) => self.send(prompt),
                    Err(e) => self.say(format!("{e:#}"), true),
                }
            }
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Char(c) => self.input.push(c),
            _ => {}
        }
    }

    fn on_rebuild_form(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc => {
                self.popups.pop();
            }
            KeyCode::Enter => {
                self.popups.pop();
                let cancel = Arc::new(AtomicBool::new(false));
                let request = Request::Rebuild {
                    schema: PathBuf::from(&self.schema_path),
                    cancel: cancel.clone(),
                };
                if self.requests.send(request).is_ok() {
                    self.cancel = Some(cancel);
                    self.job = Some((0, 0));
                    self.say(format!("rebuilding from {}", self.schema_path), false);
                }
            }
            KeyCode::Backspace => {
                self.schema_path.pop();
            }
            KeyCode::Char(c) => self.schema_path.push(c),
            _ => {}
        }
    }

    fn cycle_focus(&mut self, by: usize) {
        let at = Panel::ORDER
            .iter()
            .position(|p| *p == self.focus)
            .unwrap_or(0);
        self.focus = Panel::ORDER[(at + by) % Panel::ORDER.len()];
    }

    fn move_selection(&mut self, dl: isize, dh: isize) {
        let (l, h) = self.selected;
        let clamp =
            |v: usize, d: isize, n: usize| (v as isize + d).clamp(0, n as isize - 1) as usize;
        self.selected = (
            clamp(l, dl, self.shape.layers),
            clamp(h, dh, self.shape.heads),
        );
        self.focus = Panel::Grid;
    }

    /// The session's frontier: every setting run so far (by positions and
    /// recovery) with its speedup over exact (summed TTFT), mean KL and top-1
    /// agreement over its runs; the current setting marked.
    pub fn session_frontier(&self) -> Vec<SessionPoint> {
        let name = |p: Positions, r: Recovery| format!("{} · {r}", p.name());
        let current = name(self.positions, self.recovery);
        let mut points: Vec<SessionPoint> = Vec::new();
        let mut sums: Vec<(f64, f64, f64, usize)> = Vec::new();
        for run in &self.history {
            let setting = name(run.positions, run.recovery);
            let at = match points.iter().position(|p| p.setting == setting) {
                Some(at) => at,
                None => {
                    points.push(SessionPoint {
                        current: setting == current,
                        setting,
                        runs: 0,
                        speedup: 0.0,
                        kl: 0.0,
                        top1: 0.0,
                    });
                    sums.push((0.0, 0.0, 0.0, 0));
                    points.len() - 1
                }
            };
            let s = &mut sums[at];
            s.0 += run.ttft_ms[0];
            s.1 += run.ttft_ms[2];
            s.2 += run.kl;
            s.3 += usize::from(run.top1_agree);
            points[at].runs += 1;
        }
        for (p, (exact, modular, kl, agree)) in points.iter_mut().zip(sums) {
            p.speedup = exact / modular;
            p.kl = kl / p.runs as f64;
            p.top1 = agree as f64 / p.runs as f64;
        }
        points
    }

    /// `+`/`-`: the next or previous setting of the current recovery kind.
    fn step_recovery(&mut self, by: isize) {
        let steps: Vec<f64> = match self.recovery {
            Recovery::None => {
                self.say(
                    "naive reuse has no setting: m picks first:K, select:R, probe:R or probe-modules:M",
                    true,
                );
                return;
            }
            other => other.settings().into_iter().map(Recovery::value).collect(),
        };
        let value = self.recovery.value();
        let at = steps
            .iter()
            .position(|&s| s >= value)
            .unwrap_or(steps.len() - 1) as isize;
        let next = steps[(at + by).clamp(0, steps.len() as isize - 1) as usize];
        self.recovery = self.recovery.with_value(next);
        self.say(format!("recovery {}", self.recovery), false);
        self.rerun();
    }

    /// `m`: none → first → select → probe → probe-modules, then the other
    /// positions.
    fn cycle_mode(&mut self) {
        self.recovery = match self.recovery {
            Recovery::None => Recovery::First(16),
            Recovery::First(_) => Recovery::Select(15.0),
            Recovery::Select(_) => Recovery::Probe {
                percent: 5.0,
                layers: 0,
            },
            Recovery::Probe { .. } => Recovery::ProbeModules(1),
            Recovery::ProbeModules(_) => {
                self.positions = match self.positions {
                    Positions::Contiguous => Positions::Schema,
                    Positions::Schema => Positions::Contiguous,
                };
                Recovery::None
            }
        };
        self.say(
            format!(
                "positions {}, recovery {}",
                self.positions.name(),
                self.recovery
            ),
            false,
        );
        self.rerun();
    }

    /// Handles a mouse event: a click focuses the panel under it.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        if mouse.kind != MouseEventKind::Down(MouseButton::Left) {
            return;
        }
        let at = Position::new(mouse.column, mouse.row);
        if let Some((panel, _)) = self.areas.iter().find(|(_, r)| r.contains(at)) {
            self.focus = *panel;
        }
    }
}
