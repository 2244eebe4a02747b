//! The dashboard's state and how keys, mouse clicks, worker events and the
//! clock change it. Nothing here touches the terminal: the view draws an
//! [`App`], and the worker is reached only through its request channel, so
//! every key can be tested without either.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;

use anyhow::Context;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::config::{Config, KeyMap};
use super::keys::{self, Action};
use super::tally::HeadTally;
use super::theme::Theme;
use super::worker::{
    CheckHeads, Event, JobOutcome, JobRequest, JobUpdate, NeighbourList, Pinned, QueryResult,
    Request,
};
use crate::cache::policy::IDENTICAL;
use crate::cache::{Database, Policy};
use crate::cache::{HeadType, feature};
use crate::engine::{Mode, StageTimings};
use crate::eval::{Objective, median};
use crate::model::{ModelShape, truncation_note};
use crate::plot::SweepPoint;

/// Recent queries kept in the history and the latency chart.
pub const HISTORY: usize = 64;

/// What the layer × head grid shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridView {
    /// The current query's decisions and similarities.
    Query,
    /// Every cached or shadow run of the session: mean true similarity and
    /// hit rate per head.
    Stream,
    /// The same numbers from the last threshold check on the calibration
    /// split.
    Calibration,
    /// The current query against the pinned input: per head, the similarity
    /// of the pinned map to the query's exact map.
    Pinned,
}

/// Most matches the search popup lists.
pub const SEARCH_MATCHES: usize = 200;

/// The search popup (`/`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchState {
    /// What is typed.
    pub input: String,
    /// Entries whose text contains it (case-insensitive), in entry order.
    pub matches: Vec<u32>,
    /// The selected match.
    pub row: usize,
}

/// Moves a list's selected `row` up or down (`Up`/`Down`) within `rows`.
fn step_row(row: &mut usize, rows: usize, action: Action) {
    match action {
        Action::Up => *row = row.saturating_sub(1),
        Action::Down => *row = (*row + 1).min(rows.saturating_sub(1)),
        _ => {}
    }
}

/// What the head-type views say about a database built before head types.
const NO_HEAD_TYPES: &str = "no head types: the database was built before them (R rebuilds it)";

/// Nearest entries `n` lists.
pub const NEIGHBOURS: usize = 5;

/// What the grid's cells add (`y` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// The hit glyph and the similarity.
    None,
    /// Each head's type tag (from the database) instead of the hit glyph.
    Types,
    /// Each head's mean normalised entropy (from the database) as colour and
    /// digits.
    Entropy,
}

/// A panel that can hold the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The query input.
    Query,
    /// Recent queries.
    History,
    /// The layer × head grid.
    Grid,
    /// The selected head's maps.
    Maps,
    /// Latency.
    Latency,
}

impl Panel {
    /// Focus order (Tab).
    pub const ORDER: [Panel; 5] = [
        Panel::Query,
        Panel::History,
        Panel::Grid,
        Panel::Maps,
        Panel::Latency,
    ];

    /// Its title.
    pub fn title(self) -> &'static str {
        match self {
            Panel::Query => "Query",
            Panel::History => "History",
            Panel::Grid => "Layer × head",
            Panel::Maps => "Attention maps",
            Panel::Latency => "Latency",
        }
    }
}

/// A popup over the panels (a stack: Esc closes the top one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popup {
    /// Every key.
    Help,
    /// Global scale, per-layer thresholds, calibration budget.
    Thresholds,
    /// Database facts and the rebuild form.
    Database,
    /// The selected layer's nearest entries.
    Neighbours,
    /// Searching the database's texts.
    Search,
}

/// One finished query in the history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// The text.
    pub text: String,
    /// The mode it ran in.
    pub mode: Mode,
    /// Share of heads reused.
    pub hit_rate: f64,
    /// The run's timings (the cached run in shadow mode).
    pub timings: StageTimings,
    /// Shadow mode: the exact run's timings.
    pub exact_timings: Option<StageTimings>,
    /// Shadow mode: output fidelity.
    pub fidelity: Option<f32>,
}

impl HistoryItem {
    /// End-to-end exact time, when known.
    pub fn exact_ms(&self) -> Option<f64> {
        match self.mode {
            Mode::Exact => Some(self.timings.total),
            _ => self.exact_timings.map(|t| t.total),
        }
    }

    /// End-to-end cached time, when known.
    pub fn cached_ms(&self) -> Option<f64> {
        (self.mode != Mode::Exact).then_some(self.timings.total)
    }
}

/// The live speedup readout: medians over the recent shadow runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowSpeedup {
    /// Shadow runs in the history.
    pub runs: usize,
    /// Median of exact ÷ cached end-to-end time.
    pub e2e: f64,
    /// Median of exact attention ÷ cached attention with its look-up.
    pub attention: f64,
}

/// The live speedup over `history`'s shadow runs (`None` without any).
pub fn shadow_speedup<'a>(
    history: impl IntoIterator<Item = &'a HistoryItem>,
) -> Option<ShadowSpeedup> {
    let pairs: Vec<(&StageTimings, &StageTimings)> = history
        .into_iter()
        .filter(|i| i.mode == Mode::Shadow)
        .filter_map(|i| i.exact_timings.as_ref().map(|e| (e, &i.timings)))
        .collect();
    let ratios = |f: fn(&StageTimings, &StageTimings) -> f64| {
        median(&pairs.iter().map(|(e, c)| f(e, c)).collect::<Vec<_>>())
    };
    Some(ShadowSpeedup {
        runs: pairs.len(),
        e2e: ratios(|e, c| e.total / c.total)?,
        attention: ratios(|e, c| e.attention / c.attention_with_lookup())?,
    })
}

/// A running background job.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Its id (events of earlier, cancelled jobs are ignored).
    pub id: u64,
    /// Its name.
    pub name: &'static str,
    /// Steps done.
    pub done: usize,
    /// Steps in all (0: not known yet).
    pub total: usize,
}

/// The selected head's maps, ready to draw.
#[derive(Debug, Clone)]
pub struct HeadMaps {
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Tokens of the query.
    pub tokens: Vec<String>,
    /// The exact map, row-major `[S, S]`.
    pub exact: Vec<f32>,
    /// The neighbour's map fitted to the query's length, if any.
    pub cached: Option<Vec<f32>>,
}

/// The rebuild form's fields.
#[derive(Debug, Clone)]
pub struct RebuildForm {
    /// Corpus spec.
    pub corpus: String,
    /// Limit (empty: all).
    pub limit: String,
    /// Which field takes typed characters: 0 corpus, 1 limit.
    pub field: usize,
}

/// A message in the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// True for errors.
    pub error: bool,
}

/// Regions of the last frame, for mouse clicks.
#[derive(Debug, Clone, Default)]
pub struct HitAreas {
    /// Each panel's rectangle.
    pub panels: Vec<(Panel, Rect)>,
    /// Each grid cell's rectangle with its (layer, head).
    pub cells: Vec<(Rect, usize, usize)>,
}

/// Static facts shown in the header.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Model name (its directory's name).
    pub name: String,
    /// Its sizes.
    pub shape: ModelShape,
    /// Device it runs on.
    pub device: String,
}

/// The demo stream: a split replayed at a steady pace.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its name (e.g. `rt:test`).
    pub name: String,
    /// Its texts.
    pub texts: Vec<String>,
    /// Index of the next text.
    pub next: usize,
    /// Time between queries.
    pub interval: Duration,
    /// Paused by the user.
    pub paused: bool,
    /// When the last stream query was sent.
    pub last: Option<Instant>,
}

/// Everything the dashboard shows and remembers.
pub struct App {
    /// Model facts.
    pub model: ModelInfo,
    /// The database in service.
    pub db: Option<Arc<Database>>,
    /// Where rebuilds write (the database in service, or the default).
    pub db_dir: PathBuf,
    /// Current mode.
    pub mode: Mode,
    /// The policy in service.
    pub policy: Policy,
    /// The policy before `+`/`-` scaling (the one scales apply to).
    pub base_policy: Policy,
    /// Global scale on the base policy's thresholds.
    pub scale: f32,
    /// Per-layer scale on top of the global one.
    pub layer_scale: Vec<f32>,
    /// Calibration budget and objective.
    pub budget: f64,
    /// Calibration objective.
    pub objective: Objective,
    /// Colours or glyphs.
    pub theme: Theme,
    /// Focused panel.
    pub focus: Panel,
    /// Open popups, top last.
    pub popups: Vec<Popup>,
    /// Query being typed.
    pub input: String,
    /// True while typing into the query.
    pub editing: bool,
    /// The demo stream.
    pub stream: Stream,
    /// Finished queries, newest first.
    pub history: VecDeque<HistoryItem>,
    /// Selected history row.
    pub history_selected: usize,
    /// The latest result.
    pub current: Option<QueryResult>,
    /// Selected (layer, head).
    pub selected: (usize, usize),
    /// The selected head's maps.
    pub head_maps: Option<HeadMaps>,
    /// First grid row shown (scrolling for deep models).
    pub grid_scroll: usize,
    /// Selected row of the thresholds popup (0: global, 1..: layers).
    pub threshold_row: usize,
    /// The rebuild form.
    pub rebuild: RebuildForm,
    /// The running job.
    pub job: Option<JobView>,
    /// This session's threshold checks on the calibration split (a sweep
    /// along the threshold scale), in the order they finished.
    pub checks: Vec<SweepPoint>,
    /// Queries each check measured.
    pub check_queries: usize,
    /// The last check's per-head hit rate and cacheability.
    pub check_heads: Option<CheckHeads>,
    /// Status line.
    pub status: Option<Status>,
    /// Heads reused and heads run, over this session's cached runs.
    pub session_hits: (usize, usize),
    /// Per head, over this session's cached and shadow runs (the corpus view).
    pub tally: HeadTally,
    /// What the grid shows.
    pub grid_view: GridView,
    /// The focused panel fills the screen.
    pub zoomed: bool,
    /// What the grid cells show over their similarity.
    pub overlay: Overlay,
    /// First line of the help popup shown (it scrolls on small screens).
    pub help_scroll: usize,
    /// The nearest entries asked for with `n` (`None` while they are found).
    pub neighbours: Option<NeighbourList>,
    /// The selected row of the neighbours popup.
    pub neighbour_row: usize,
    /// An entry the maps panel compares the current query against instead
    /// of the layer's neighbour (chosen in the neighbours popup).
    pub compare: Option<u32>,
    /// The pinned input (`p`) the pinned grid view compares queries with.
    pub pinned: Option<Pinned>,
    /// True while the engine thread captures a history item's maps to pin.
    pub capturing: bool,
    /// The search popup's text, matches (entry numbers) and selected row.
    pub search: SearchState,
    /// The thresholds popup shows and `+`/`-` scale only heads of this type.
    pub type_filter: Option<HeadType>,
    /// Scale on the thresholds of each head type (order of [`HeadType::ALL`]).
    pub type_scale: [f32; 6],
    /// Key bindings (the defaults with a config file's overrides).
    pub keymap: KeyMap,
    /// Where `W` writes the config file (`None`: nowhere known).
    pub config_path: Option<PathBuf>,
    /// The `--model` the dashboard was opened with, for the config file.
    pub model_arg: Option<String>,
    /// Queries sent and not answered yet.
    pub in_flight: usize,
    /// Id of the last job started.
    job_seq: u64,
    /// Where `e` writes.
    pub export_dir: PathBuf,
    /// Regions of the last frame.
    pub areas: HitAreas,
    /// Set by `q`.
    pub quit: bool,
    /// A running export (`e`): yields the files written.
    export: Option<Receiver<anyhow::Result<Vec<PathBuf>>>>,
    requests: Sender<Request>,
}

/// How an [`App`] starts.
pub struct AppConfig {
    /// Model facts.
    pub model: ModelInfo,
    /// The database in service, if any.
    pub db: Option<Arc<Database>>,
    /// Where rebuilds write.
    pub db_dir: PathBuf,
    /// The policy.
    pub policy: Policy,
    /// The stream's name and texts.
    pub stream: (String, Vec<String>),
    /// Time between stream queries.
    pub interval: Duration,
    /// Colours or glyphs.
    pub theme: Theme,
    /// Where `e` writes.
    pub export_dir: PathBuf,
}

impl App {
    /// A dashboard sending its work to `requests`.
    pub fn new(config: AppConfig, requests: Sender<Request>) -> Self {
        let (layers, heads) = (config.model.shape.layers, config.model.shape.heads);
        let mode = if config.db.is_some() {
            Mode::Shadow
        } else {
            Mode::Exact
        };
        Self {
            model: config.model,
            db: config.db,
            db_dir: config.db_dir,
            mode,
            base_policy: config.policy.clone(),
            policy: config.policy,
            scale: 1.0,
            layer_scale: vec![1.0; layers],
            budget: 0.5,
            objective: Objective::Accuracy,
            theme: config.theme,
            focus: Panel::Grid,
            popups: Vec::new(),
            input: String::new(),
            editing: false,
            stream: Stream {
                name: config.stream.0,
                texts: config.stream.1,
                next: 0,
                interval: config.interval,
                paused: false,
                last: None,
            },
            history: VecDeque::new(),
            history_selected: 0,
            current: None,
            selected: (0, 0),
            head_maps: None,
            grid_scroll: 0,
            threshold_row: 0,
            rebuild: RebuildForm {
                corpus: "rt:db".into(),
                limit: String::new(),
                field: 0,
            },
            job: None,
            checks: Vec::new(),
            check_queries: 0,
            check_heads: None,
            status: None,
            session_hits: (0, 0),
            tally: HeadTally::new(layers, heads),
            grid_view: GridView::Query,
            zoomed: false,
            overlay: Overlay::None,
            help_scroll: 0,
            neighbours: None,
            neighbour_row: 0,
            compare: None,
            pinned: None,
            capturing: false,
            search: SearchState::default(),
            type_filter: None,
            type_scale: [1.0; 6],
            keymap: KeyMap::default(),
            config_path: None,
            model_arg: None,
            in_flight: 0,
            job_seq: 0,
            export_dir: config.export_dir,
            areas: HitAreas::default(),
            quit: false,
            export: None,
            requests,
        }
    }

    /// The model's sizes.
    pub fn shape(&self) -> &ModelShape {
        &self.model.shape
    }

    /// The top popup, if any.
    pub fn popup(&self) -> Option<Popup> {
        self.popups.last().copied()
    }

    /// Share of heads reused over this session's cached runs.
    pub fn session_hit_rate(&self) -> Option<f64> {
        let (hits, all) = self.session_hits;
        (all > 0).then(|| hits as f64 / all as f64)
    }

    /// Sends a request to the worker (a closed worker is reported, not fatal).
    fn send(&mut self, request: Request) {
        if self.requests.send(request).is_err() {
            self.error("the engine thread has stopped: restart the dashboard".into());
        }
    }

    /// Shows an informational message.
    pub fn info(&mut self, text: String) {
        self.status = Some(Status { text, error: false });
    }

    /// Shows an error (the dashboard keeps running).
    pub fn error(&mut self, text: String) {
        self.status = Some(Status { text, error: true });
    }

    /// `p`: pins the neighbours popup's selected entry, or the focused
    /// history's selected item (its maps captured on the engine thread), and
    /// shows the pinned grid view.
    fn pin(&mut self) {
        if self.popup() == Some(Popup::Neighbours) {
            self.pin_entry(self.selected_neighbour(), "no entry selected");
            return;
        }
        match self.history.get(self.history_selected) {
            Some(item) if self.focus == Panel::History => {
                let text = item.text.clone();
                self.send(Request::Capture(text));
                self.capturing = true;
                self.info("pinning: capturing its maps…".into());
            }
            _ => self.error(
                "p pins the selected history item (focus the history with Tab) or an entry of the neighbours popup (n)".into(),
            ),
        }
    }

    /// Pins database entry `entry` and closes the popup it was chosen in
    /// (`None`: says `none` in the status line).
    fn pin_entry(&mut self, entry: Option<u32>, none: &str) {
        match entry.zip(self.db.clone()) {
            Some((entry, db)) => match Pinned::entry(&db, entry) {
                Ok(pinned) => {
                    self.popups.pop();
                    self.show_pinned(pinned);
                }
                Err(e) => self.error(format!("{e:#}")),
            },
            None => self.error(none.into()),
        }
    }

    /// Takes `pinned` as the pinned input and shows the pinned grid view.
    fn show_pinned(&mut self, pinned: Pinned) {
        self.info(format!(
            "pinned {}; v shows queries against it",
            pinned.label
        ));
        self.pinned = Some(pinned);
        self.grid_view = GridView::Pinned;
        self.refresh_head_maps();
    }

    /// The entry selected in the neighbours popup.
    fn selected_neighbour(&self) -> Option<u32> {
        self.neighbours
            .as_ref()
            .and_then(|n| n.entries.get(self.neighbour_row))
            .map(|n| n.entry)
    }

    /// `n`: asks the worker for the selected layer's nearest entries of the
    /// current query and opens their popup.
    fn ask_neighbours(&mut self) {
        let Some(query) = self.current.as_ref().map(|r| r.query.clone()) else {
            self.error("no query yet: type one (i) or wait for the stream".into());
            return;
        };
        if self.db.is_none() {
            self.error("neighbours need a database: press R to build one".into());
            return;
        }
        self.neighbours = None;
        self.neighbour_row = 0;
        self.send(Request::Neighbours {
            text: query,
            layer: self.selected.0,
            k: NEIGHBOURS,
        });
        if self.popup() != Some(Popup::Neighbours) {
            self.popups.push(Popup::Neighbours);
        }
    }

    /// Per head `(l, h)`, the similarity of the pinned input's map to the
    /// current query's exact map (`None` without both, or when the pinned
    /// input is shorter than the query).
    pub fn pinned_similarity(&self, l: usize, h: usize) -> Option<f32> {
        let s = self.current.as_ref()?.trace.tokens.len();
        self.similarity_to_query(&self.pinned.as_ref()?.map_for(l, h, s)?, l, h)
    }

    /// The true similarity of `entry`'s map to the current query's exact
    /// map at the selected head (`None` when it cannot serve the query).
    pub fn similarity_to(&self, entry: u32) -> Option<f32> {
        let result = self.current.as_ref()?;
        let (l, h) = self.selected;
        let s = result.trace.tokens.len();
        let theirs = result
            .db
            .as_ref()?
            .map_values_for(entry as usize, l, h, s)
            .ok()?;
        self.similarity_to_query(&theirs, l, h)
    }

    /// The similarity of `map` (fitted to the current query's length) to the
    /// query's exact map of head `(l, h)`.
    fn similarity_to_query(&self, map: &[f32], l: usize, h: usize) -> Option<f32> {
        let result = self.current.as_ref()?;
        let exact = result.exact_maps.get(l)?.get(h)?;
        Some(crate::cache::similarity(
            map,
            exact,
            result.trace.tokens.len(),
        ))
    }

    /// `W`: writes the current state as the config file — model, database,
    /// the policy in service (saved as `policy.json` beside it), stream,
    /// theme and key overrides — and returns its path.
    fn save_config(&self) -> anyhow::Result<PathBuf> {
        let path = self
            .config_path
            .clone()
            .context("no config file path: set XDG_CONFIG_HOME or HOME, or pass --config FILE")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let policy = path.with_file_name("policy.json");
        self.policy.save(&policy)?;
        // The other tabs' sections stay as the file has them.
        let modules = match path.is_file() {
            true => Config::load(&path, false)?.modules,
            false => Default::default(),
        };
        Config {
            model: self.model_arg.clone(),
            db: Some(self.db_dir.clone()),
            policy: Some(policy.to_string_lossy().into_owned()),
            split: Some(self.stream.name.clone()),
            interval_ms: Some(self.stream.interval.as_millis() as u64),
            theme: Some(self.theme.name().to_string()),
            keys: self.keymap.to_config(),
            modules,
        }
        .save(&path)?;
        Ok(path)
    }

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        if self.editing {
            self.on_edit_key(key);
            return;
        }
        if self.popup() == Some(Popup::Database) && self.on_form_key(key) {
            return;
        }
        if self.popup() == Some(Popup::Search) && self.on_search_key(key) {
            return;
        }
        if let Some(action) = self.keymap.action(key) {
            self.on_action(action);
        }
    }

    /// Keys while typing a query.
    fn on_edit_key(&mut self, key: KeyEvent) {
        if keys::action(key) == Some(Action::Quit) && key.code != KeyCode::Char('q') {
            self.quit = true;
            return;
        }
        match key.code {
            KeyCode::Esc => self.editing = false,
            KeyCode::Enter => {
                let text = self.input.trim().to_string();
                self.editing = false;
                if text.is_empty() {
                    self.error("the query is empty: type a sentence, then Enter".into());
                } else {
                    self.stream.paused = true;
                    self.run_text(text);
                }
            }
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Char(c) => self.input.push(c),
            _ => {}
        }
    }

    /// Keys typed into the rebuild form; true when consumed.
    /// Keys typed into the search popup (true when used).
    fn on_search_key(&mut self, key: KeyEvent) -> bool {
        match key.code {
            KeyCode::Backspace => {
                self.search.input.pop();
            }
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .contains(crossterm::event::KeyModifiers::CONTROL) =>
            {
                self.search.input.push(c);
            }
            _ => return false,
        }
        self.find_matches();
        true
    }

    /// The database entries whose text contains the search input.
    fn find_matches(&mut self) {
        let needle = self.search.input.to_lowercase();
        self.search.row = 0;
        self.search.matches = match (&self.db, needle.is_empty()) {
            (Some(db), false) => db
                .entries()
                .iter()
                .filter(|e| {
                    crate::eval::task_input(&e.text)
                        .to_lowercase()
                        .contains(&needle)
                })
                .map(|e| e.id)
                .take(SEARCH_MATCHES)
                .collect(),
            _ => Vec::new(),
        };
    }

    fn on_form_key(&mut self, key: KeyEvent) -> bool {
        let field = match self.rebuild.field {
            0 => &mut self.rebuild.corpus,
            _ => &mut self.rebuild.limit,
        };
        match key.code {
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                self.rebuild.field = 1 - self.rebuild.field;
                true
            }
            KeyCode::Backspace => {
                field.pop();
                true
            }
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .contains(crossterm::event::KeyModifiers::CONTROL) =>
            {
                if self.rebuild.field == 1 && !c.is_ascii_digit() {
                    return c == 'q' || c == '?';
                }
                field.push(c);
                true
            }
            _ => false,
        }
    }

    /// Applies one action.
    pub fn on_action(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Help => {
                if self.popup() != Some(Popup::Help) {
                    self.help_scroll = 0;
                    self.popups.push(Popup::Help);
                }
            }
            Action::Close => {
                if self.popups.pop().is_none() && self.job.is_some() {
                    self.send(Request::CancelJob);
                    self.info("cancelling the job…".into());
                }
            }
            Action::FocusNext | Action::FocusPrev => {
                let i = Panel::ORDER
                    .iter()
                    .position(|&p| p == self.focus)
                    .unwrap_or(0);
                let n = Panel::ORDER.len();
                let next = if action == Action::FocusNext {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.focus = Panel::ORDER[next];
            }
            Action::Up | Action::Down | Action::Left | Action::Right => self.on_move(action),
            Action::EditQuery => {
                self.popups.clear();
                self.focus = Panel::Query;
                self.editing = true;
            }
            Action::TogglePause => {
                self.stream.paused = !self.stream.paused;
                self.info(if self.stream.paused {
                    "stream paused (Space resumes)".into()
                } else {
                    format!("stream resumed: replaying {}", self.stream.name)
                });
            }
            Action::CycleMode => self.cycle_mode(),
            Action::Loosen => self.adjust(1.25),
            Action::Tighten => self.adjust(0.8),
            Action::Thresholds => self.toggle_popup(Popup::Thresholds),
            Action::Calibrate => self.calibrate(),
            Action::Rebuild => self.toggle_popup(Popup::Database),
            Action::Export => match super::export::export(self) {
                Ok(done) => {
                    self.export = Some(done);
                    self.info(format!("exporting to {}…", self.export_dir.display()));
                }
                Err(e) => self.error(format!("export failed: {e:#}")),
            },
            Action::Confirm => match self.popup() {
                Some(Popup::Database) => self.start_rebuild(),
                Some(Popup::Search) => {
                    let chosen = self.search.matches.get(self.search.row).copied();
                    self.pin_entry(chosen, "no matching entry");
                }
                Some(Popup::Neighbours) => {
                    if let Some(entry) = self.selected_neighbour() {
                        self.compare = Some(entry);
                        self.popups.pop();
                        self.refresh_head_maps();
                        self.info(format!(
                            "the maps panel compares this query with entry #{entry} (a new query ends it)"
                        ));
                    }
                }
                None if self.focus == Panel::Query => self.on_action(Action::EditQuery),
                None if self.focus == Panel::History => {
                    if let Some(item) = self.history.get(self.history_selected) {
                        let text = item.text.clone();
                        self.stream.paused = true;
                        self.run_text(text);
                    }
                }
                _ => {}
            },
            Action::BudgetUp => self.budget = step_budget(self.budget, self.objective, true),
            Action::BudgetDown => self.budget = step_budget(self.budget, self.objective, false),
            Action::GridView => {
                let before = self.grid_view;
                let (checked, pinned) = (self.check_heads.is_some(), self.pinned.is_some());
                self.grid_view = match before {
                    GridView::Query => GridView::Stream,
                    GridView::Stream if checked => GridView::Calibration,
                    GridView::Stream | GridView::Calibration if pinned => GridView::Pinned,
                    _ => GridView::Query,
                };
                // The maps panel shows the pinned map in the pinned view only.
                if (before == GridView::Pinned) != (self.grid_view == GridView::Pinned) {
                    self.refresh_head_maps();
                }
            }
            Action::Pin => self.pin(),
            Action::TypeFilter => {
                if self.popup() == Some(Popup::Thresholds) {
                    self.cycle_type_filter();
                }
            }
            Action::Search => {
                if self.db.is_none() {
                    self.error("search needs a database: press R to build one".into());
                } else if self.popup() != Some(Popup::Search) {
                    self.search = SearchState::default();
                    self.popups.push(Popup::Search);
                }
            }
            Action::Zoom => self.zoomed = !self.zoomed,
            Action::Neighbours => self.ask_neighbours(),
            Action::Theme => {
                self.theme = self.theme.next();
                self.info(format!("theme {}", self.theme.name()));
            }
            Action::SaveConfig => match self.save_config() {
                Ok(path) => self.info(format!("wrote {}", path.display())),
                Err(e) => self.error(format!("{e:#}")),
            },
            Action::Overlay => {
                self.overlay = match self.overlay {
                    Overlay::None => Overlay::Types,
                    Overlay::Types => Overlay::Entropy,
                    Overlay::Entropy => Overlay::None,
                };
                if self.overlay != Overlay::None && !self.has_head_types() {
                    self.info(NO_HEAD_TYPES.into());
                }
            }
            Action::Objective => {
                self.objective = match self.objective {
                    Objective::Accuracy => Objective::Fidelity,
                    Objective::Fidelity => Objective::Accuracy,
                };
                self.budget = default_budget(self.objective);
            }
        }
    }

    fn toggle_popup(&mut self, popup: Popup) {
        if self.popup() == Some(popup) {
            self.popups.pop();
        } else {
            self.popups.retain(|&p| p != popup);
            self.popups.push(popup);
        }
    }

    /// Arrow keys: the popup's rows, else the focused panel.
    fn on_move(&mut self, action: Action) {
        let shape = *self.shape();
        if self.popup() == Some(Popup::Search) {
            step_row(&mut self.search.row, self.search.matches.len(), action);
            return;
        }
        if self.popup() == Some(Popup::Neighbours) {
            let rows = self.neighbours.as_ref().map_or(0, |n| n.entries.len());
            step_row(&mut self.neighbour_row, rows, action);
            return;
        }
        if self.popup() == Some(Popup::Help) {
            match action {
                Action::Up => self.help_scroll = self.help_scroll.saturating_sub(1),
                // The view clamps it to the last full page.
                Action::Down => self.help_scroll += 1,
                _ => {}
            }
            return;
        }
        if self.popup() == Some(Popup::Thresholds) {
            // Row 0 is the global scale, then one row per layer.
            step_row(&mut self.threshold_row, shape.layers + 1, action);
            return;
        }
        match self.focus {
            Panel::History => step_row(&mut self.history_selected, self.history.len(), action),
            _ => {
                let (mut l, mut h) = self.selected;
                match action {
                    Action::Up => l = l.saturating_sub(1),
                    Action::Down => l = (l + 1).min(shape.layers - 1),
                    Action::Left => h = h.saturating_sub(1),
                    Action::Right => h = (h + 1).min(shape.heads - 1),
                    _ => {}
                }
                self.select(l, h);
            }
        }
    }

    /// Selects a head and loads its maps.
    pub fn select(&mut self, layer: usize, head: usize) {
        self.selected = (layer, head);
        self.refresh_head_maps();
    }

    /// Recomputes the selected head's maps from the current result.
    fn refresh_head_maps(&mut self) {
        let (layer, head) = self.selected;
        self.head_maps = self.current.as_ref().map(|result| {
            let s = result.trace.tokens.len();
            let pinned = match (self.grid_view, &self.pinned) {
                (GridView::Pinned, Some(p)) => Some(p.map_for(layer, head, s).map(Cow::into_owned)),
                _ => None,
            };
            let cached = pinned.unwrap_or_else(|| {
                result.db.as_ref().and_then(|db| {
                    let entry = match self.compare {
                        Some(entry) => entry,
                        None => result.trace.layers.get(layer)?.neighbour.as_ref()?.entry,
                    };
                    db.map_values_for(entry as usize, layer, head, s).ok()
                })
            });
            HeadMaps {
                layer,
                head,
                tokens: result.trace.tokens.clone(),
                exact: result.exact_maps[layer][head].clone(),
                cached,
            }
        });
    }

    fn cycle_mode(&mut self) {
        if self.db.is_none() {
            self.error("cached and shadow modes need a database: press R to build one".into());
            return;
        }
        self.mode = match self.mode {
            Mode::Exact => Mode::Cached,
            Mode::Cached => Mode::Shadow,
            Mode::Shadow => Mode::Exact,
        };
        self.info(format!("mode: {}", mode_name(self.mode)));
        self.rerun();
    }

    /// `+`/`-`: scales the selected layer in the thresholds popup, else all.
    fn adjust(&mut self, factor: f32) {
        if self
            .base_policy
            .max_distance
            .iter()
            .flatten()
            .all(|&d| d <= IDENTICAL)
        {
            if factor < 1.0 {
                self.info("the thresholds are already strict".into());
                return;
            }
            // Nothing to scale: start from a small global threshold.
            self.base_policy = Policy {
                lengths: self.base_policy.lengths,
                ..Policy::global(self.shape(), 0.02)
            };
            self.scale = 1.0;
        } else if let (Some(Popup::Thresholds), Some(kind)) = (self.popup(), self.type_filter) {
            let t = kind.index();
            self.type_scale[t] = (self.type_scale[t] * factor).clamp(0.01, 100.0);
        } else if self.popup() == Some(Popup::Thresholds) && self.threshold_row > 0 {
            let l = self.threshold_row - 1;
            self.layer_scale[l] = (self.layer_scale[l] * factor).clamp(0.01, 100.0);
        } else {
            self.scale = (self.scale * factor).clamp(0.01, 100.0);
        }
        self.apply_thresholds();
    }

    /// The type of head `(l, h)` from the database, if it has head types.
    pub fn head_type(&self, l: usize, h: usize) -> Option<HeadType> {
        Some(self.db.as_ref()?.head_types()?.get(l, h)?.kind)
    }

    /// The scale on head `(l, h)`'s threshold from its type.
    fn type_scale_of(&self, l: usize, h: usize) -> f32 {
        self.head_type(l, h)
            .map_or(1.0, |kind| self.type_scale[kind.index()])
    }

    /// True when the database in service classified its heads.
    fn has_head_types(&self) -> bool {
        self.db.as_ref().is_some_and(|db| db.head_types().is_some())
    }

    /// `f` in the thresholds popup: all heads → each head type → all.
    fn cycle_type_filter(&mut self) {
        if !self.has_head_types() {
            self.error(NO_HEAD_TYPES.into());
            return;
        }
        self.type_filter = match self.type_filter {
            None => Some(HeadType::ALL[0]),
            Some(kind) => HeadType::ALL.get(kind.index() + 1).copied(),
        };
    }

    /// Derives the policy in service from the base policy and the scales,
    /// re-decides the current query at once, re-runs it and checks the new
    /// thresholds on the calibration split in the background.
    fn apply_thresholds(&mut self) {
        let mut policy = self.base_policy.clone();
        for (l, row) in policy.max_distance.iter_mut().enumerate() {
            for (h, d) in row.iter_mut().enumerate() {
                let scaled = *d * self.scale * self.layer_scale[l] * self.type_scale_of(l, h);
                *d = scaled.min(*feature::DISTANCE_RANGE.end());
            }
        }
        let layered =
            self.layer_scale.iter().any(|&s| s != 1.0) || self.type_scale.iter().any(|&s| s != 1.0);
        policy.name = if self.scale == 1.0 && !layered {
            self.base_policy.name.clone()
        } else {
            format!(
                "{}×{:.2}{}",
                self.base_policy.name,
                self.scale,
                if layered { "+layers" } else { "" }
            )
        };
        self.policy = policy.clone();
        self.redecide();
        self.send(Request::SetPolicy(policy.clone()));
        self.rerun();
        match &self.job {
            Some(job) if job.name != "check" => self.info(format!(
                "thresholds changed; the check waits for the {}",
                job.name
            )),
            _ if self.db.is_some() => {
                let scale = f64::from(self.scale);
                self.start_job(JobRequest::Check { policy, scale });
            }
            _ => {}
        }
    }

    /// Re-decides the current query's heads under the policy in service,
    /// from the neighbours already found (the re-run then replaces it).
    fn redecide(&mut self) {
        let policy = &self.policy;
        if let Some(result) = self.current.as_mut() {
            if result.trace.mode == Mode::Exact {
                return;
            }
            for (l, layer) in result.trace.layers.iter_mut().enumerate() {
                let distance = layer.neighbour.as_ref().map(|n| n.distance);
                for (h, head) in layer.heads.iter_mut().enumerate() {
                    head.hit = distance.is_some_and(|d| policy.hits(l, h, d));
                }
            }
            let heads: Vec<bool> = result
                .trace
                .layers
                .iter()
                .flat_map(|l| l.heads.iter().map(|h| h.hit))
                .collect();
            result.trace.hit_rate =
                heads.iter().filter(|&&h| h).count() as f64 / heads.len().max(1) as f64;
        }
    }

    /// Runs the current query again (after a mode or threshold change).
    fn rerun(&mut self) {
        if let Some(text) = self.current.as_ref().map(|r| r.query.clone()) {
            self.run_text(text);
        }
    }

    /// Sends `text` to the worker in the current mode.
    pub fn run_text(&mut self, text: String) {
        self.in_flight += 1;
        let mode = self.mode;
        self.send(Request::Run { text, mode });
    }

    fn calibrate(&mut self) {
        if self.db.is_none() {
            self.error("calibration needs a database: press R to build one".into());
            return;
        }
        if let Some(job) = &self.job
            && job.name != "check"
        {
            self.error(format!(
                "a {} is running: wait or press Esc to cancel it",
                job.name
            ));
            return;
        }
        self.start_job(JobRequest::Calibrate {
            budget: self.budget,
            objective: self.objective,
        });
        self.info(format!(
            "calibrating for {} ≤ {} (Esc cancels)",
            objective_name(self.objective),
            self.budget
        ));
    }

    fn start_rebuild(&mut self) {
        if let Some(job) = &self.job
            && job.name != "check"
        {
            self.error(format!(
                "a {} is running: wait or press Esc to cancel it",
                job.name
            ));
            return;
        }
        let limit = match self.rebuild.limit.trim() {
            "" => None,
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.error(format!(
                        "limit `{n}` is not a positive number: clear it for all"
                    ));
                    return;
                }
            },
        };
        let corpus = self.rebuild.corpus.trim().to_string();
        if let Err(e) = crate::data::CorpusSpec::parse(&corpus) {
            self.error(format!("{e:#}"));
            return;
        }
        self.start_job(JobRequest::Rebuild {
            corpus: corpus.clone(),
            limit,
            out: self.db_dir.clone(),
        });
        self.info(format!(
            "rebuilding {} from {corpus} (Esc cancels; the current database stays in service)",
            self.db_dir.display()
        ));
    }

    /// Starts a job and shows its gauge.
    pub fn start_job(&mut self, request: JobRequest) {
        self.job_seq += 1;
        let (id, name) = (self.job_seq, request.name());
        self.send(Request::StartJob(id, request));
        self.job = Some(JobView {
            id,
            name,
            done: 0,
            total: 0,
        });
    }

    /// Handles an event from the worker.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Ran(result) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.on_result(*result);
            }
            Event::RunFailed(e) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.error(e);
            }
            Event::Neighbours(Ok(list)) => {
                if list.entries.is_empty() {
                    self.info(format!(
                        "no entry can serve this query at layer {}",
                        list.layer
                    ));
                }
                self.neighbours = Some(list);
                self.neighbour_row = 0;
            }
            Event::Neighbours(Err(e)) => self.error(e),
            Event::Captured(Ok(pinned)) => {
                self.capturing = false;
                self.show_pinned(pinned);
            }
            Event::Captured(Err(e)) => {
                self.capturing = false;
                self.error(e);
            }
            Event::Job { id, name, update } => {
                // Updates of a job replaced since (a check superseded by
                // the next threshold change) are stale.
                if self.job.as_ref().is_none_or(|j| j.id != id) {
                    return;
                }
                match update {
                    JobUpdate::Progress(done, total) => {
                        if let Some(view) = self.job.as_mut() {
                            (view.done, view.total) = (done, total);
                        }
                    }
                    JobUpdate::Done(outcome) => {
                        self.job = None;
                        self.on_outcome(*outcome);
                    }
                    JobUpdate::Failed(e) => {
                        self.job = None;
                        self.error(format!("{name} failed: {e}"));
                    }
                }
            }
        }
    }

    fn on_outcome(&mut self, outcome: JobOutcome) {
        match outcome {
            JobOutcome::Rebuilt(db) => {
                let entries = db.entries().len();
                self.db = Some(db.clone());
                self.send(Request::UseDatabase(db, self.policy.clone()));
                if self.mode == Mode::Exact {
                    self.mode = Mode::Shadow;
                }
                self.popups.retain(|&p| p != Popup::Database);
                self.info(format!(
                    "database ready: {entries} entries; now in {} mode",
                    mode_name(self.mode)
                ));
                self.rerun();
            }
            JobOutcome::Calibrated(policy) => {
                let calibration = policy.calibration.as_ref();
                let hit_rate = calibration.map_or(0.0, |c| c.expected_hit_rate);
                let rule = calibration
                    .and_then(|c| c.kept_rule())
                    .map_or(String::new(), |c| format!(", {} rule", c.rule.name()));
                self.base_policy = policy;
                self.scale = 1.0;
                self.layer_scale.iter_mut().for_each(|s| *s = 1.0);
                self.info(format!(
                    "calibrated: expected hit rate {:.1}%{rule} (saved as the database's policy.json)",
                    hit_rate * 100.0
                ));
                self.apply_thresholds();
            }
            JobOutcome::Checked {
                point,
                queries,
                heads,
            } => {
                self.check_queries = queries;
                self.checks.push(point);
                self.check_heads = Some(heads);
            }
        }
    }

    fn on_result(&mut self, result: QueryResult) {
        let trace = &result.trace;
        self.tally.add(trace);
        if trace.mode != Mode::Exact {
            let heads = trace.layers.iter().map(|l| l.heads.len()).sum::<usize>();
            self.session_hits.0 += (trace.hit_rate * heads as f64).round() as usize;
            self.session_hits.1 += heads;
        }
        self.history.push_front(HistoryItem {
            text: result.query.clone(),
            mode: trace.mode,
            hit_rate: trace.hit_rate,
            timings: trace.timings,
            exact_timings: trace.exact_timings,
            fidelity: trace.fidelity,
        });
        self.history.truncate(HISTORY);
        if trace.truncated {
            self.info(truncation_note(trace.tokens.len()));
        }
        self.current = Some(result);
        self.compare = None;
        self.refresh_head_maps();
    }

    /// True while an export is being written.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Reports a finished export.
    fn poll_export(&mut self) {
        let Some(done) = &self.export else { return };
        let outcome = match done.try_recv() {
            Err(TryRecvError::Empty) => return,
            Ok(outcome) => outcome,
            Err(TryRecvError::Disconnected) => Err(anyhow::anyhow!("the export thread stopped")),
        };
        self.export = None;
        match outcome {
            Ok(files) => self.info(format!(
                "exported {} (+{} plots)",
                files[0].display(),
                files.len() - 1
            )),
            Err(e) => self.error(format!("export failed: {e:#}")),
        }
    }

    /// Called on every loop turn: reports a finished export and sends the
    /// next stream query when due.
    pub fn tick(&mut self, now: Instant) {
        self.poll_export();
        let stream = &self.stream;
        let due = stream
            .last
            .is_none_or(|last| now.duration_since(last) >= stream.interval);
        if stream.paused || stream.texts.is_empty() || self.in_flight > 0 || !due {
            return;
        }
        let text = stream.texts[stream.next % stream.texts.len()].clone();
        self.stream.next += 1;
        self.stream.last = Some(now);
        self.run_text(text);
    }

    /// Handles a mouse event: a click focuses a panel or selects a head.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        if mouse.kind != MouseEventKind::Down(MouseButton::Left) || !self.popups.is_empty() {
            return;
        }
        let at = Position::new(mouse.column, mouse.row);
        if let Some(&(_, l, h)) = self.areas.cells.iter().find(|(r, _, _)| r.contains(at)) {
            self.focus = Panel::Grid;
            self.select(l, h);
        } else if let Some(&(panel, _)) = self.areas.panels.iter().find(|(_, r)| r.contains(at)) {
            self.focus = panel;
        }
    }
}

/// The default calibration budget of an objective.
fn default_budget(objective: Objective) -> f64 {
    match objective {
        Objective::Accuracy => 0.5,
        Objective::Fidelity => 0.002,
    }
}

/// The next budget up or down (a 1-2-5 ladder per objective).
fn step_budget(budget: f64, objective: Objective, up: bool) -> f64 {
    const LADDER: [f64; 9] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0];
    let unit = match objective {
        Objective::Accuracy => 1.0,
        Objective::Fidelity => 0.001,
    };
    let i = LADDER
        .iter()
        .position(|&x| x * unit >= budget - 1e-12)
        .unwrap_or(LADDER.len() - 1);
    let j = if up {
        (i + 1).min(LADDER.len() - 1)
    } else {
        i.saturating_sub(1)
    };
    LADDER[j] * unit
}

/// A mode's name.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Exact => "exact",
        Mode::Cached => "cached",
        Mode::Shadow => "shadow",
    }
}

/// An objective's name with its unit.
pub fn objective_name(objective: Objective) -> &'static str {
    match objective {
        Objective::Accuracy => "accuracy loss (pt, upper 95% bound)",
        Objective::Fidelity => "1 − fidelity",
    }
}
