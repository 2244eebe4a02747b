//! The dashboard: snapshots of every panel and of the whole screen (drawn
//! from a fixed, synthetic trace so the pictures are stable), the state
//! change of every key, and the real worker with a tiny model: a rebuild's
//! progress and cancel reach the UI, and keys are handled while it runs.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use attncache::cache::similarity;
use attncache::cache::{BuildOptions, Database, FeatureKind, ModelIdentity, Policy, build};
use attncache::data::CorpusSpec;
use attncache::engine::{Engine, HeadTrace, LayerTrace, Mode, NeighbourTrace, StageTimings, Trace};
use attncache::model::{LayerTiming, Model, ModelShape};
use attncache::tui::app::{App, AppConfig, GridView, HeadMaps, ModelInfo, Panel, Popup};
use attncache::tui::headless::{pump, screen_text, wait_idle};
use attncache::tui::keys::parse_key;
use attncache::tui::theme::Theme;
use attncache::tui::view;
use attncache::tui::worker::{self, Event, JobSettings, QueryResult, Request};
use crossterm::event::{KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SHAPE: ModelShape = ModelShape {
    layers: 6,
    heads: 12,
    head_dim: 32,
    hidden: 384,
    max_positions: 512,
};

const TOKENS: [&str; 7] = ["[CLS]", "a", "gripping", ",", "moving", "film", "[SEP]"];

/// A deterministic value in [0, 1) from two indices.
fn wave(a: usize, b: usize) -> f32 {
    ((a * 7 + b * 13) % 17) as f32 / 17.0
}

fn timings(scale: f64) -> StageTimings {
    StageTimings {
        tokenize: 0.05,
        embeddings: 0.2,
        feature: 0.3 * scale,
        search: 0.3 * scale,
        rerank: 0.1 * scale,
        map_load: 0.1 * scale,
        attention: 5.0 - scale,
        rest: 7.0,
        pooling: 0.05,
        total: 12.8,
    }
}

/// A shadow-mode trace with fixed similarities, decisions and timings.
fn trace(text: &str, n: usize) -> Trace {
    trace_of(&SHAPE, text, n)
}

/// [`trace`] for a model of another shape.
fn trace_of(shape: &ModelShape, text: &str, n: usize) -> Trace {
    let layers = (0..shape.layers)
        .map(|l| LayerTrace {
            neighbour: (l != 5).then(|| NeighbourTrace {
                entry: 100 + l as u32,
                text: "a moving and gripping film".into(),
                tokens: TOKENS.len(),
                distance: 0.05 + 0.01 * l as f32,
                shared_prefix: None,
                carried: false,
            }),
            heads: (0..shape.heads)
                .map(|h| HeadTrace {
                    hit: l != 5 && (l + h) % 3 == 0,
                    predicted: (l != 5).then(|| 0.5 + wave(l, h) / 2.0),
                    similarity: (l != 5).then(|| 0.45 + wave(h, l) / 2.0),
                    js: (l != 5).then(|| 0.01 * wave(l, h)),
                    similarity_new_rows: None,
                })
                .collect(),
            timing: LayerTiming::default(),
        })
        .collect();
    let mut cached = timings(1.0);
    cached.total = 12.0 + n as f64 * 0.5;
    let mut exact = timings(0.0);
    exact.total = 13.0 + (n % 3) as f64;
    Trace {
        text: text.into(),
        tokens: TOKENS.iter().map(|t| t.to_string()).collect(),
        truncated: false,
        mode: Mode::Shadow,
        policy: "global:0.1".into(),
        layers,
        hit_rate: 0.25,
        fidelity: Some(0.9993),
        timings: cached,
        exact_timings: Some(exact),
    }
}

/// A row-stochastic map, mostly diagonal, shifted by `k`.
fn map(k: usize) -> Vec<f32> {
    let s = TOKENS.len();
    let mut m = vec![0.02f32; s * s];
    for r in 0..s {
        m[r * s + (r + k) % s] += 1.0 - 0.02 * s as f32;
    }
    m
}

fn config(theme: Theme, db: Option<Arc<Database>>, shape: ModelShape, policy: Policy) -> AppConfig {
    AppConfig {
        model: ModelInfo {
            name: "all-minilm-l6-v2".into(),
            shape,
            device: "cpu".into(),
        },
        db,
        db_dir: "/data/db".into(),
        policy,
        stream: ("rt:test".into(), vec!["first".into(), "second".into()]),
        interval: Duration::from_millis(1),
        theme,
        export_dir: std::env::temp_dir().join("attncache-test-export"),
    }
}

/// A dashboard showing five finished synthetic queries, head L1 H2
/// selected, its maps filled in.
fn fixture(theme: Theme) -> (App, Receiver<Request>) {
    let (tx, rx) = channel();
    let mut app = App::new(config(theme, None, SHAPE, Policy::global(&SHAPE, 0.1)), tx);
    app.mode = Mode::Shadow;
    let texts = [
        "the plot is thin",
        "a triumph",
        "dull and overlong",
        "funny, warm and wise",
        "a gripping, moving film",
    ];
    for (n, text) in texts.iter().enumerate() {
        app.on_event(Event::Ran(Box::new(QueryResult {
            query: text.to_string(),
            trace: trace(text, n),
            exact_maps: vec![vec![map(0); SHAPE.heads]; SHAPE.layers],
            db: None,
        })));
    }
    app.select(1, 2);
    app.head_maps = Some(HeadMaps {
        layer: 1,
        head: 2,
        tokens: TOKENS.iter().map(|t| t.to_string()).collect(),
        exact: map(0),
        cached: Some(map(1)),
    });
    app.info("ready".into());
    (app, rx)
}

fn render(app: &mut App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::draw(f, app)).unwrap();
    screen_text(terminal.backend()).join("\n")
}

fn render_panel(app: &mut App, panel: Panel, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::draw_panel(f, app, panel)).unwrap();
    screen_text(terminal.backend()).join("\n")
}

/// A monochrome dashboard over a database of `texts` built for `model` in
/// `dir` (policy `global:0.1`), that database, and the receiving end of the
/// dashboard's requests (keep it: a dashboard whose engine is gone says so).
fn app_with_database(
    model: &Model,
    texts: &[&str],
    dir: &Path,
) -> (App, Arc<Database>, Receiver<Request>) {
    let db = Arc::new(common::tiny_database(model, texts, dir));
    let shape = *model.shape();
    let (tx, rx) = channel();
    let app = App::new(
        config(MONO, Some(db.clone()), shape, Policy::global(&shape, 0.1)),
        tx,
    );
    (app, db, rx)
}

const MONO: Theme = Theme::MONO;
const COLOR: Theme = Theme::DARK;

#[test]
fn whole_screen_at_80x24_and_120x40() {
    for theme in [COLOR, MONO] {
        let (mut app, _rx) = fixture(theme);
        let name = if theme.color { "color" } else { "mono" };
        insta::assert_snapshot!(format!("screen_80x24_{name}"), render(&mut app, 80, 24));
        insta::assert_snapshot!(format!("screen_120x40_{name}"), render(&mut app, 120, 40));
    }
}

#[test]
fn every_panel_alone() {
    let (mut app, _rx) = fixture(MONO);
    for panel in Panel::ORDER {
        let name = format!("panel_{}", format!("{panel:?}").to_lowercase());
        insta::assert_snapshot!(name, render_panel(&mut app, panel, 60, 18));
    }
}

#[test]
fn every_popup() {
    for (popup, key) in [
        (Popup::Help, "?"),
        (Popup::Thresholds, "t"),
        (Popup::Database, "R"),
    ] {
        let (mut app, _rx) = fixture(MONO);
        app.on_key(parse_key(key).unwrap());
        assert_eq!(app.popup(), Some(popup));
        let name = format!("popup_{}", format!("{popup:?}").to_lowercase());
        insta::assert_snapshot!(name, render(&mut app, 80, 24));
    }
}

/// Every help line is shown whole, at 80 and at 120 columns (a line was
/// once cut at 120: "(selected layer in the popu").
#[test]
fn help_lines_are_never_cut() {
    for (width, height) in [(80, 24), (120, 40)] {
        let (mut app, _rx) = fixture(MONO);
        app.on_key(parse_key("?").unwrap());
        // Every line, scrolling down a page at a time where it does not fit.
        let mut screen = render(&mut app, width, height);
        for _ in 0..height {
            app.on_key(parse_key("Down").unwrap());
            screen.push('\n');
            screen.push_str(&render(&mut app, width, height));
        }
        let words: String = screen.split_whitespace().collect::<Vec<_>>().join(" ");
        for (_, what) in attncache::tui::keys::HELP {
            for word in what.split_whitespace() {
                assert!(
                    words.contains(word),
                    "{width}×{height}: `{word}` missing from\n{screen}"
                );
            }
        }
        assert!(
            words.contains("(selected layer in the popup)"),
            "{width}×{height}:\n{screen}"
        );
    }
}

#[test]
fn small_terminals_get_a_message_and_resizing_adapts() {
    let (mut app, _rx) = fixture(COLOR);
    let small = render(&mut app, 60, 20);
    assert!(small.contains("needs at least 80×24"), "{small}");
    // Bigger screens give the grid wider cells (three decimals fit).
    let big = render(&mut app, 200, 60);
    assert!(big.contains(".9") && big.contains("H11"), "{big}");
}

#[test]
fn the_grid_scrolls_for_deep_models() {
    let deep = ModelShape {
        layers: 30,
        heads: 9,
        head_dim: 64,
        hidden: 576,
        max_positions: 2048,
    };
    let (tx, _rx) = channel();
    let mut app = App::new(config(MONO, None, deep, Policy::global(&deep, 0.1)), tx);
    let top = render(&mut app, 80, 24);
    assert!(top.contains("L0 ") && top.contains("of 30"), "{top}");
    for _ in 0..29 {
        app.on_key(parse_key("j").unwrap());
    }
    assert_eq!(app.selected, (29, 0));
    let bottom = render(&mut app, 80, 24);
    assert!(
        bottom.contains("L29") && !bottom.contains("L0 "),
        "{bottom}"
    );
}

/// Every request the app has sent so far.
fn sent(rx: &Receiver<Request>) -> Vec<Request> {
    rx.try_iter().collect()
}

#[test]
fn keys_change_state_as_documented() {
    let (mut app, rx) = fixture(MONO);
    let key = |app: &mut App, k: &str| app.on_key(parse_key(k).unwrap());
    // Help opens and Esc closes; F1 too.
    key(&mut app, "?");
    assert_eq!(app.popups, vec![Popup::Help]);
    key(&mut app, "Esc");
    assert!(app.popups.is_empty());
    key(&mut app, "F1");
    assert_eq!(app.popup(), Some(Popup::Help));
    key(&mut app, "Esc");
    // Tab / BackTab cycle focus.
    assert_eq!(app.focus, Panel::Grid);
    key(&mut app, "Tab");
    assert_eq!(app.focus, Panel::Maps);
    key(&mut app, "BackTab");
    key(&mut app, "BackTab");
    assert_eq!(app.focus, Panel::History);
    // In the history, arrows move the selection; Enter re-runs that text.
    key(&mut app, "j");
    assert_eq!(app.history_selected, 1);
    key(&mut app, "Enter");
    match sent(&rx).as_slice() {
        [Request::Run { text, mode }] => {
            assert_eq!(text, "funny, warm and wise");
            assert_eq!(*mode, Mode::Shadow);
        }
        other => panic!("{other:?}"),
    }
    // In the grid, hjkl and arrows move the selected head, clamped.
    key(&mut app, "Tab");
    assert_eq!(app.focus, Panel::Grid);
    app.select(0, 0);
    key(&mut app, "l");
    key(&mut app, "Down");
    assert_eq!(app.selected, (1, 1));
    key(&mut app, "h");
    key(&mut app, "h");
    key(&mut app, "k");
    key(&mut app, "Up");
    assert_eq!(app.selected, (0, 0));
    // i edits, typed keys (q included) go to the query, Enter runs it.
    key(&mut app, "i");
    assert!(app.editing);
    for c in "quiet film".chars() {
        key(&mut app, &c.to_string());
    }
    key(&mut app, "Backspace");
    assert!(!app.quit);
    key(&mut app, "Enter");
    assert!(!app.editing);
    assert!(app.stream.paused, "a typed query pauses the stream");
    assert!(matches!(sent(&rx).as_slice(), [Request::Run { text, .. }] if text == "quiet fil"));
    // Space toggles the stream.
    key(&mut app, "Space");
    assert!(!app.stream.paused);
    // t toggles the thresholds popup; R the database popup.
    key(&mut app, "t");
    assert_eq!(app.popup(), Some(Popup::Thresholds));
    key(&mut app, "t");
    assert!(app.popups.is_empty());
    // [ ] move the budget along its ladder; o switches the objective.
    key(&mut app, "]");
    assert_eq!(app.budget, 1.0);
    key(&mut app, "[");
    key(&mut app, "[");
    assert_eq!(app.budget, 0.2);
    key(&mut app, "o");
    assert_eq!(app.budget, 0.002);
    // m without a database explains itself and stays in the mode.
    let mode = app.mode;
    key(&mut app, "m");
    assert_eq!(app.mode, mode);
    assert!(app.status.as_ref().unwrap().error);
    // c without a database too.
    key(&mut app, "c");
    assert!(app.status.as_ref().unwrap().text.contains("press R"));
    // e writes the current view in the background: JSON and plots.
    key(&mut app, "e");
    assert!(app.exporting());
    let start = Instant::now();
    while app.exporting() {
        assert!(start.elapsed() < Duration::from_secs(60), "export hangs");
        std::thread::sleep(Duration::from_millis(10));
        app.tick(Instant::now());
    }
    let status = app.status.clone().unwrap();
    assert!(!status.error, "{status:?}");
    let path = status
        .text
        .trim_start_matches("exported ")
        .split(" (+")
        .next()
        .unwrap();
    assert!(status.text.ends_with("(+6 plots)"), "{}", status.text);
    let view: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(view["selected_head"]["layer"], 0);
    assert_eq!(view["history"].as_array().unwrap().len(), 5);
    let stem = path.trim_end_matches(".json");
    for suffix in [
        "-maps.png",
        "-maps.svg",
        "-heads.png",
        "-heads.svg",
        "-latency.png",
        "-latency.svg",
    ] {
        let file = format!("{stem}{suffix}");
        assert!(std::fs::metadata(&file).unwrap().len() > 1000, "{file}");
        std::fs::remove_file(file).unwrap();
    }
    std::fs::remove_file(path).unwrap();
    // q and Ctrl-C quit.
    key(&mut app, "q");
    assert!(app.quit);
    let (mut app, _rx) = fixture(MONO);
    key(&mut app, "Ctrl-C");
    assert!(app.quit);
}

#[test]
fn threshold_keys_re_decide_at_once_and_ask_for_a_rerun_and_a_check() {
    let (tx, rx) = channel();
    let mut app = App::new(config(MONO, None, SHAPE, Policy::global(&SHAPE, 0.1)), tx);
    app.mode = Mode::Shadow;
    app.on_event(Event::Ran(Box::new(QueryResult {
        query: "x".into(),
        trace: trace("x", 0),
        exact_maps: vec![vec![map(0); SHAPE.heads]; SHAPE.layers],
        db: None,
    })));
    // Distances are 0.05 + 0.01·layer: under 0.1 every layer but the last
    // (no neighbour) hits everywhere after re-deciding.
    app.on_key(parse_key("+").unwrap());
    let expected = app.policy.max_distance[0][0];
    assert!((expected - 0.125).abs() < 1e-6, "{expected}");
    let trace = &app.current.as_ref().unwrap().trace;
    assert!(
        trace.layers[..5]
            .iter()
            .all(|l| l.heads.iter().all(|h| h.hit))
    );
    assert!(trace.layers[5].heads.iter().all(|h| !h.hit));
    assert!((trace.hit_rate - 5.0 / 6.0).abs() < 1e-9);
    let requests = sent(&rx);
    assert!(matches!(&requests[0], Request::SetPolicy(p) if p.max_distance[0][0] == expected));
    assert!(matches!(&requests[1], Request::Run { text, .. } if text == "x"));
    // No database: no check is started.
    assert_eq!(requests.len(), 2);
    // - five times tightens below every distance: nothing hits.
    for _ in 0..5 {
        app.on_key(parse_key("-").unwrap());
    }
    assert!(app.policy.max_distance[0][0] < 0.05);
    assert_eq!(app.current.as_ref().unwrap().trace.hit_rate, 0.0);
    // In the thresholds popup, + on a layer row scales that layer only.
    app.on_key(parse_key("t").unwrap());
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("+").unwrap());
    assert!(app.policy.max_distance[1][0] > app.policy.max_distance[0][0]);
    assert!(app.policy.name.ends_with("+layers"), "{}", app.policy.name);
}

#[test]
fn strict_policies_loosen_to_a_small_global_threshold() {
    let (tx, _rx) = channel();
    let mut app = App::new(config(MONO, None, SHAPE, Policy::strict(&SHAPE)), tx);
    app.on_key(parse_key("-").unwrap());
    assert!(app.status.as_ref().unwrap().text.contains("already strict"));
    app.on_key(parse_key("+").unwrap());
    assert_eq!(app.policy.name, "global:0.02");
}

#[test]
fn clicks_select_heads_and_focus_panels() {
    let (mut app, _rx) = fixture(MONO);
    render(&mut app, 120, 40);
    let &(rect, l, h) = app
        .areas
        .cells
        .iter()
        .find(|(_, l, h)| (*l, *h) == (3, 7))
        .unwrap();
    let click = |x, y| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(click(rect.x, rect.y));
    assert_eq!((l, h), (3, 7));
    assert_eq!(app.selected, (3, 7));
    let history = app
        .areas
        .panels
        .iter()
        .find(|(p, _)| *p == Panel::History)
        .unwrap()
        .1;
    app.on_mouse(click(history.x + 2, history.y + 2));
    assert_eq!(app.focus, Panel::History);
}

#[test]
fn the_stream_sends_one_query_at_a_time_at_its_pace() {
    let (tx, rx) = channel();
    let mut app = App::new(config(MONO, None, SHAPE, Policy::strict(&SHAPE)), tx);
    app.stream.interval = Duration::from_secs(3600);
    let now = Instant::now();
    app.tick(now);
    app.tick(now);
    assert_eq!(sent(&rx).len(), 1, "one in flight at a time");
    app.in_flight = 0;
    app.tick(now);
    assert!(sent(&rx).is_empty(), "not before the interval");
    app.tick(now + Duration::from_secs(3601));
    assert!(matches!(sent(&rx).as_slice(), [Request::Run { text, .. }] if text == "second"));
    app.in_flight = 0;
    app.stream.paused = true;
    app.tick(now + Duration::from_secs(9999));
    assert!(sent(&rx).is_empty(), "paused");
}

/// Texts from the tiny vocabulary, all distinct.
fn tiny_texts(n: usize) -> Vec<String> {
    let words = [
        "the", "movie", "was", "great", "bad", "plot", "film", "and", "a", "is", "not", "fun",
    ];
    (0..n)
        .map(|i| {
            let len = 3 + i % 5;
            (0..len)
                .map(|k| words[(i / 7 + k * (i % 7 + 1)) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
                + &format!(
                    " {}",
                    ["x", "y", "z", "q", "w", "k", "v"][i % 7].repeat(1 + i / 7 % 40)
                )
        })
        .collect()
}

/// A tiny model, a corpus file of `n` texts and a database built from its
/// first 40.
fn tiny_setup(dir: &Path, n: usize) -> (Arc<Model>, Arc<Database>, String) {
    common::write_tiny_model(&dir.join("model"));
    let model = Arc::new(Model::load_path(&dir.join("model"), &candle_core::Device::Cpu).unwrap());
    let corpus_path = dir.join("corpus.txt");
    std::fs::write(&corpus_path, tiny_texts(n).join("\n")).unwrap();
    let spec = corpus_path.to_str().unwrap().to_string();
    let corpus = CorpusSpec::parse(&spec)
        .unwrap()
        .load(&Default::default())
        .unwrap()
        .limited(Some(40));
    let db_dir = dir.join("db");
    build(
        &model,
        &corpus,
        &db_dir,
        BuildOptions {
            feature: FeatureKind::Pooled,
            hnsw_min_bucket: 8192,
        },
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let db = Arc::new(Database::open(&db_dir, &ModelIdentity::of(&model).unwrap()).unwrap());
    (model, db, spec)
}

/// A dashboard on the tiny model with its real engine thread.
fn live_app(model: &Arc<Model>, db: &Arc<Database>, spec: &str) -> (App, Receiver<Event>) {
    let policy = Policy::global(model.shape(), 0.5);
    let engine = Engine::new(model.clone(), db.clone(), policy.clone()).unwrap();
    let (request_tx, request_rx) = channel();
    let (event_tx, event_rx) = channel();
    let settings = JobSettings {
        calib_split: spec.to_string(),
        calib_limit: 10,
    };
    worker::spawn(engine, settings, request_rx, event_tx);
    let mut config = config(MONO, Some(db.clone()), *model.shape(), policy);
    config.db_dir = db.dir().to_path_buf();
    let mut app = App::new(config, request_tx);
    app.stream.paused = true;
    (app, event_rx)
}

#[test]
fn live_queries_modes_and_checks_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let (model, db, spec) = tiny_setup(dir.path(), 60);
    let (mut app, events) = live_app(&model, &db, &spec);
    let timeout = Duration::from_secs(120);
    assert_eq!(app.mode, Mode::Shadow);
    // A database text is its own neighbour at distance 0: every head hits.
    let own = tiny_texts(60)[3].clone();
    app.run_text(own.clone());
    wait_idle(&mut app, &events, timeout).unwrap();
    let current = app.current.clone().unwrap();
    assert_eq!(current.trace.text, own);
    assert_eq!(current.trace.hit_rate, 1.0);
    assert!(current.trace.fidelity.unwrap() > 0.99999);
    let maps = app.head_maps.clone().unwrap();
    let diff: f32 = maps
        .exact
        .iter()
        .zip(maps.cached.as_ref().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-3, "own map differs by {diff}");
    // m cycles shadow → exact → cached, re-running the query each time.
    app.on_key(parse_key("m").unwrap());
    wait_idle(&mut app, &events, timeout).unwrap();
    assert_eq!(app.current.as_ref().unwrap().trace.mode, Mode::Exact);
    app.on_key(parse_key("m").unwrap());
    wait_idle(&mut app, &events, timeout).unwrap();
    assert_eq!(app.current.as_ref().unwrap().trace.mode, Mode::Cached);
    // + starts a check on the calibration split; its result arrives.
    app.on_key(parse_key("m").unwrap());
    app.on_key(parse_key("+").unwrap());
    assert_eq!(app.job.as_ref().unwrap().name, "check");
    wait_idle(&mut app, &events, timeout).unwrap();
    let check = app.checks.last().cloned().unwrap();
    assert_eq!(app.check_queries, 10);
    assert!((0.0..=1.0).contains(&check.hit_rate) && check.fidelity_mean > 0.0);
    assert!(check.e2e_speedup > 0.0 && (check.knob - 1.25).abs() < 1e-6);
    // e exports the view with the session's sweep of checks.
    app.on_key(parse_key("e").unwrap());
    wait_idle(&mut app, &events, timeout).unwrap();
    let status = app.status.clone().unwrap();
    assert!(status.text.ends_with("(+8 plots)"), "{status:?}");
    let json = status
        .text
        .trim_start_matches("exported ")
        .split(" (+")
        .next()
        .unwrap();
    let stem = json.trim_end_matches(".json").to_string();
    for suffix in [
        ".json",
        "-maps.png",
        "-maps.svg",
        "-heads.png",
        "-heads.svg",
        "-latency.png",
    ] {
        std::fs::remove_file(format!("{stem}{suffix}")).unwrap();
    }
    for suffix in ["-latency.svg", "-sweep.png", "-sweep.svg"] {
        std::fs::remove_file(format!("{stem}{suffix}")).unwrap();
    }
    // A query that fails (empty after tokenization is fine; a bad policy is
    // not) shows an error and the dashboard goes on.
    app.on_event(Event::RunFailed("boom".into()));
    assert!(app.status.as_ref().unwrap().error);
    app.run_text(own);
    wait_idle(&mut app, &events, timeout).unwrap();
    assert!(app.history.len() >= 5);
}

#[test]
fn a_rebuild_reports_progress_can_be_cancelled_and_keys_work_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (model, db, spec) = tiny_setup(dir.path(), 4000);
    let (mut app, events) = live_app(&model, &db, &spec);
    let timeout = Duration::from_secs(300);
    let manifest = std::fs::read(db.dir().join("manifest.json")).unwrap();

    // Start a rebuild from the form (all 4000 texts).
    app.on_key(parse_key("R").unwrap());
    for _ in 0..app.rebuild.corpus.len() {
        app.on_key(parse_key("Backspace").unwrap());
    }
    for c in spec.chars() {
        app.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char(c),
            KeyModifiers::NONE,
        ));
    }
    app.on_key(parse_key("Enter").unwrap());
    assert_eq!(app.job.as_ref().unwrap().name, "rebuild");
    // Progress reaches the UI.
    let start = Instant::now();
    while app.job.as_ref().is_some_and(|j| j.done < 50) {
        assert!(start.elapsed() < timeout, "no progress");
        pump(&mut app, &events, Duration::from_millis(5));
    }
    let job = app.job.clone().expect("still running");
    assert_eq!(job.total, 4000);
    // Keys are handled at once while it runs.
    let key_start = Instant::now();
    app.on_key(parse_key("Esc").unwrap()); // closes the popup
    app.on_key(parse_key("Tab").unwrap());
    app.on_key(parse_key("?").unwrap());
    assert!(key_start.elapsed() < Duration::from_millis(50));
    assert_eq!(app.focus, Panel::Maps);
    assert_eq!(app.popup(), Some(Popup::Help));
    pump(&mut app, &events, Duration::ZERO);
    assert!(app.job.is_some(), "the rebuild is still running");
    // Esc closes help, a second Esc cancels the job.
    app.on_key(parse_key("Esc").unwrap());
    app.on_key(parse_key("Esc").unwrap());
    wait_idle(&mut app, &events, timeout).unwrap();
    let status = app.status.clone().unwrap();
    assert!(
        status.error && status.text.contains("cancelled"),
        "{status:?}"
    );
    // The old database is still in service and unchanged on disk.
    assert_eq!(app.db.as_ref().unwrap().entries().len(), 40);
    assert_eq!(
        std::fs::read(db.dir().join("manifest.json")).unwrap(),
        manifest
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("building"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A rebuild that finishes swaps the database in.
    app.rebuild.limit = "100".into();
    app.on_key(parse_key("R").unwrap());
    app.on_key(parse_key("Enter").unwrap());
    wait_idle(&mut app, &events, timeout).unwrap();
    assert_eq!(
        app.db.as_ref().unwrap().entries().len(),
        100,
        "{:?}",
        app.status
    );
    let own = tiny_texts(4000)[77].clone();
    app.run_text(own);
    wait_idle(&mut app, &events, timeout).unwrap();
    let trace = &app.current.as_ref().unwrap().trace;
    assert_eq!(
        trace.hit_rate, 1.0,
        "entry 77 exists only in the new database"
    );
}

#[test]
fn jobs_can_run_calibration_from_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let (model, db, spec) = tiny_setup(dir.path(), 60);
    let (mut app, events) = live_app(&model, &db, &spec);
    app.objective = attncache::eval::Objective::Fidelity;
    app.budget = 0.01;
    app.on_key(parse_key("c").unwrap());
    assert_eq!(app.job.as_ref().unwrap().name, "calibrate");
    wait_idle(&mut app, &events, Duration::from_secs(300)).unwrap();
    let status = app.status.clone().unwrap();
    assert!(!status.error, "{status:?}");
    assert!(app.policy.calibration.is_some());
    assert!(db.dir().join("policy.json").is_file());
    assert_eq!(app.policy.calibration.as_ref().unwrap().budget, 0.01);
}

/// The corpus view (`v`) shows, per head, the mean of the traces the
/// dashboard saw: exact runs skipped, similarity over shadow runs only.
#[test]
fn the_stream_view_is_the_mean_of_the_traces_it_saw() {
    let (tx, _rx) = channel();
    let mut app = App::new(config(MONO, None, SHAPE, Policy::global(&SHAPE, 0.1)), tx);
    let mut traces = Vec::new();
    for n in 0..4 {
        let mut t = trace("q", n);
        for (l, layer) in t.layers.iter_mut().enumerate() {
            for (h, head) in layer.heads.iter_mut().enumerate() {
                head.hit = (l + h + n) % 4 == 0;
                head.similarity = head.similarity.map(|s| s * (1.0 - 0.1 * n as f32));
            }
        }
        if n == 3 {
            t.mode = Mode::Exact;
        }
        traces.push(t);
    }
    for t in &traces {
        app.on_event(Event::Ran(Box::new(QueryResult {
            query: "q".into(),
            trace: t.clone(),
            exact_maps: vec![vec![map(0); SHAPE.heads]; SHAPE.layers],
            db: None,
        })));
    }
    let counted = &traces[..3];
    assert_eq!(app.tally.queries, 3);
    for l in 0..SHAPE.layers {
        for h in 0..SHAPE.heads {
            let hits = counted.iter().filter(|t| t.layers[l].heads[h].hit).count();
            let rate = app.tally.hit_rate(l, h).unwrap();
            assert!((rate - hits as f64 / 3.0).abs() < 1e-12, "L{l}H{h}");
            let sims: Vec<f64> = counted
                .iter()
                .filter_map(|t| t.layers[l].heads[h].similarity.map(f64::from))
                .collect();
            match app.tally.similarity(l, h) {
                Some(mean) => {
                    let want = sims.iter().sum::<f64>() / sims.len() as f64;
                    assert!((mean - want).abs() < 1e-6, "L{l}H{h}: {mean} vs {want}");
                }
                None => assert!(sims.is_empty(), "L{l}H{h}"),
            }
        }
    }
    // `v` switches the grid to it and back; the title names the selected head's numbers.
    app.select(1, 2);
    app.on_key(parse_key("v").unwrap());
    let screen = render_panel(&mut app, Panel::Grid, 80, 12);
    let want = format!(
        "similarity {:.3}, hits {:.0}%",
        app.tally.similarity(1, 2).unwrap(),
        app.tally.hit_rate(1, 2).unwrap() * 100.0
    );
    assert!(screen.contains(&want), "{want}\n{screen}");
    app.on_key(parse_key("v").unwrap());
    assert!(!render_panel(&mut app, Panel::Grid, 80, 12).contains("stream so far"));
}

#[test]
fn stream_view_and_zoom_frames() {
    for (width, height) in [(80, 24), (120, 40)] {
        let (mut app, _rx) = fixture(MONO);
        app.on_key(parse_key("v").unwrap());
        insta::assert_snapshot!(
            format!("stream_view_{width}x{height}"),
            render(&mut app, width, height)
        );
        app.on_key(parse_key("z").unwrap());
        assert!(app.zoomed);
        insta::assert_snapshot!(
            format!("zoomed_grid_{width}x{height}"),
            render(&mut app, width, height)
        );
        app.on_key(parse_key("z").unwrap());
        assert!(!app.zoomed);
    }
}

/// `y` tags every grid cell with its head's type from the database, then
/// shows each head's entropy, then neither.
#[test]
fn the_type_overlay_shows_the_databases_head_types() {
    let (_model_dir, model) = common::tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "the movie was great",
        "the plot was bad",
        "a film is fun",
        "the film is not fun",
        "a movie and a plot",
        "great fun",
    ];
    let (mut app, db, _requests) = app_with_database(&model, &texts, dir.path());
    let shape = *model.shape();
    let types = db.head_types().unwrap();
    let tags = ['P', '←', 'F', 'L', 'B', 'C'];
    let row_tags = |screen: &str, l: usize| -> Vec<char> {
        let line = screen
            .lines()
            .find(|line| line.starts_with(&format!("│L{l} ")))
            .unwrap_or_else(|| panic!("no row L{l} in\n{screen}"));
        line.chars().skip(5).filter(|c| tags.contains(c)).collect()
    };
    app.on_key(parse_key("y").unwrap());
    let screen = render_panel(&mut app, Panel::Grid, 80, 12);
    assert!(screen.contains("P pos ← prev"), "{screen}");
    for l in 0..shape.layers {
        let want: Vec<char> = types.heads[l].iter().map(|p| p.kind.tag()).collect();
        assert_eq!(row_tags(&screen, l), want, "L{l}\n{screen}");
    }
    app.on_key(parse_key("y").unwrap());
    let screen = render_panel(&mut app, Panel::Grid, 80, 12);
    assert!(screen.contains("row entropy"), "{screen}");
    let e = types.heads[0][0].entropy;
    let digits = if e >= 0.995 {
        "1.0".to_string()
    } else {
        format!("{e:.2}")[1..].to_string()
    };
    assert!(screen.contains(&digits), "entropy {e}\n{screen}");
    app.on_key(parse_key("y").unwrap());
    assert!(!render_panel(&mut app, Panel::Grid, 80, 12).contains("row entropy"));

    // The thresholds popup filters by type: `+` then scales that type only.
    let kind = types.heads[0][0].kind;
    app.on_key(parse_key("t").unwrap());
    for _ in 0..6 {
        if app.type_filter == Some(kind) {
            break;
        }
        app.on_key(parse_key("f").unwrap());
    }
    assert_eq!(app.type_filter, Some(kind));
    let screen = render(&mut app, 120, 40);
    assert!(
        screen.contains(&format!("{} heads only", kind.name())),
        "{screen}"
    );
    app.on_key(parse_key("+").unwrap());
    for l in 0..shape.layers {
        for h in 0..shape.heads {
            let want = if types.heads[l][h].kind == kind {
                0.125
            } else {
                0.1
            };
            let got = app.policy.max_distance[l][h];
            assert!((got - want).abs() < 1e-6, "L{l}H{h}: {got} vs {want}");
        }
    }
}

/// `T` cycles the themes (dark → light → 16 → mono) and `W` writes the
/// current state as a config file that reads back.
#[test]
fn themes_cycle_and_the_config_is_written_from_the_current_state() {
    let (mut app, _rx) = fixture(COLOR);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attncache").join("config.toml");
    app.config_path = Some(path.clone());
    app.model_arg = Some("smollm2".into());
    // The focused grid's border is drawn in each theme's accent.
    let border = |app: &mut App| {
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        terminal.draw(|f| view::draw(f, app)).unwrap();
        let grid = app
            .areas
            .panels
            .iter()
            .find(|(p, _)| *p == Panel::Grid)
            .unwrap()
            .1;
        terminal.backend().buffer()[(grid.x, grid.y)].fg
    };
    use ratatui::style::Color;
    assert_eq!(border(&mut app), Color::Cyan);
    for (name, colour) in [
        ("light", Color::Blue),
        ("16", Color::Cyan),
        ("mono", Color::Reset),
        ("dark", Color::Cyan),
    ] {
        app.on_key(parse_key("T").unwrap());
        assert_eq!(app.theme.name(), name);
        assert_eq!(border(&mut app), colour, "{name}");
    }
    app.on_key(parse_key("T").unwrap());
    app.on_key(parse_key("W").unwrap());
    assert!(!app.status.as_ref().unwrap().error, "{:?}", app.status);
    let config = attncache::tui::config::Config::load(&path, true).unwrap();
    assert_eq!(config.theme.as_deref(), Some("light"));
    assert_eq!(config.model.as_deref(), Some("smollm2"));
    assert_eq!(config.split.as_deref(), Some("rt:test"));
    assert_eq!(config.interval_ms, Some(1));
    let policy = Policy::parse(config.policy.as_deref().unwrap(), &SHAPE).unwrap();
    assert_eq!(policy, app.policy);
    // Without a path, W says so in the status line and writes nothing.
    app.config_path = None;
    app.on_key(parse_key("W").unwrap());
    assert!(app.status.as_ref().unwrap().error);

    // A moved key works at its new place, and the hint bar and help say so.
    let mut keys = std::collections::BTreeMap::new();
    keys.insert("calibrate".to_string(), "C".to_string());
    app.keymap = attncache::tui::config::KeyMap::from_config(&keys).unwrap();
    let screen = render(&mut app, 120, 40);
    let hints = screen.lines().last().unwrap();
    assert!(hints.contains(" C calibrate"), "{hints}");
    app.on_key(parse_key("?").unwrap());
    let screen = render(&mut app, 120, 40);
    assert!(
        screen
            .lines()
            .any(|l| l.contains("│C ") && l.contains("calibrate for the budget")),
        "{screen}"
    );
}

/// `n` lists the selected layer's nearest entries of the current query
/// (nearest first, the query's own entry first of all), and Enter makes the
/// maps panel compare the query with the chosen one.
#[test]
fn neighbours_are_listed_and_one_can_be_compared() {
    let (_model_dir, model) = common::tiny_model();
    let model = Arc::new(model);
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "the movie was great",
        "the plot was bad",
        "a film is not fun",
        "the film is fun",
        "a movie and a plot",
    ];
    let db = Arc::new(common::tiny_database(&model, &texts, dir.path()));
    let shape = *model.shape();
    let policy = Policy::global(&shape, 0.0);
    let engine = Engine::new(model.clone(), db.clone(), policy.clone()).unwrap();
    let (request_tx, request_rx) = channel();
    let (event_tx, events) = channel();
    let settings = JobSettings {
        calib_split: "rt:calib".into(),
        calib_limit: 5,
    };
    let _worker = worker::spawn(engine, settings, request_rx, event_tx);
    let mut app = App::new(config(MONO, Some(db.clone()), shape, policy), request_tx);
    app.stream.paused = true;
    app.mode = Mode::Shadow;
    app.run_text("the movie was great".into());
    wait_idle(&mut app, &events, Duration::from_secs(60)).unwrap();
    app.select(1, 0);
    app.on_key(parse_key("n").unwrap());
    assert_eq!(app.popup(), Some(Popup::Neighbours));
    wait_idle(&mut app, &events, Duration::from_secs(60)).unwrap();
    let list = app.neighbours.clone().expect("the worker answered");
    assert_eq!(list.layer, 1);
    // Same-length entries only (4 words: 6 tokens), the query's own first.
    assert_eq!(list.entries.len(), 3, "{list:?}");
    assert_eq!(list.entries[0].entry, 0);
    assert!(
        list.entries
            .windows(2)
            .all(|w| w[0].distance <= w[1].distance)
    );
    let screen = render(&mut app, 120, 40);
    assert!(screen.contains("Nearest entries · layer 1"), "{screen}");
    assert!(screen.contains("the plot was bad"), "{screen}");
    // Choose the second: the maps panel now shows that entry's map.
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("Enter").unwrap());
    let chosen = list.entries[1].entry;
    assert_eq!(app.compare, Some(chosen));
    assert_eq!(app.popup(), None);
    let maps = app.head_maps.as_ref().unwrap();
    assert_eq!(
        maps.cached.as_ref().unwrap(),
        &db.map_values_for(chosen as usize, 1, 0, 6).unwrap()
    );
    let screen = render(&mut app, 120, 40);
    assert!(
        screen.contains(&format!("compared with entry #{chosen}")),
        "{screen}"
    );

    // Pin that entry: the grid compares every head of the next query with it.
    app.on_key(parse_key("n").unwrap());
    wait_idle(&mut app, &events, Duration::from_secs(60)).unwrap();
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("p").unwrap());
    assert_eq!(
        app.pinned.as_ref().unwrap().label,
        format!("entry #{chosen}")
    );
    assert_eq!(app.grid_view, GridView::Pinned);
    app.run_text("the film was bad".into());
    wait_idle(&mut app, &events, Duration::from_secs(60)).unwrap();
    let exact = app.current.as_ref().unwrap().exact_maps[1][0].clone();
    let want = similarity(&db.map_values(chosen as usize, 1, 0).unwrap(), &exact, 6);
    assert!((app.pinned_similarity(1, 0).unwrap() - want).abs() < 1e-6);
    let screen = render(&mut app, 120, 40);
    assert!(
        screen.contains(&format!("vs pinned entry #{chosen}")),
        "{screen}"
    );
    assert!(screen.contains(&format!("{want:.3}")), "{screen}");
    // Pin a history item instead: its maps come from the engine thread.
    while app.focus != Panel::History {
        app.on_key(parse_key("Tab").unwrap());
    }
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("p").unwrap());
    wait_idle(&mut app, &events, Duration::from_secs(60)).unwrap();
    let pinned = app.pinned.as_ref().unwrap();
    assert_eq!(pinned.label, "history: the movie was great");
    let want = similarity(&pinned.maps[1][0], &exact, 6);
    assert!((app.pinned_similarity(1, 0).unwrap() - want).abs() < 1e-6);

    // `/` searches the database's texts as one types; Enter pins the match.
    app.on_key(parse_key("/").unwrap());
    assert_eq!(app.popup(), Some(Popup::Search));
    for c in "PLOT".chars() {
        app.on_key(parse_key(&c.to_string()).unwrap());
    }
    assert_eq!(app.search.matches, vec![1, 4]);
    let screen = render(&mut app, 120, 40);
    assert!(
        screen.contains("2 matches") && screen.contains("a movie and a plot"),
        "{screen}"
    );
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("Enter").unwrap());
    assert_eq!(app.popup(), None);
    assert_eq!(app.pinned.as_ref().unwrap().label, "entry #4");
    app.on_key(parse_key("/").unwrap());
    app.on_key(parse_key("z").unwrap());
    assert!(
        app.search.matches.is_empty() && !app.zoomed,
        "typing is not a command"
    );
    app.on_key(parse_key("Esc").unwrap());
    assert_eq!(app.popup(), None);
}

/// After a threshold check, `v` also shows the check's per-head hit rate
/// and cacheability on the calibration split.
#[test]
fn the_calibration_view_shows_the_last_checks_numbers() {
    use attncache::tui::worker::{CheckHeads, JobOutcome, JobRequest, JobUpdate};
    let (mut app, _rx) = fixture(MONO);
    let policy = app.policy.clone();
    app.start_job(JobRequest::Check { policy, scale: 1.0 });
    let id = app.job.as_ref().unwrap().id;
    let mut hit_rate = vec![vec![0.0; SHAPE.heads]; SHAPE.layers];
    let mut cacheability = vec![vec![Some(0.5); SHAPE.heads]; SHAPE.layers];
    hit_rate[1][2] = 0.25;
    cacheability[1][2] = Some(0.875);
    app.on_event(Event::Job {
        id,
        name: "check",
        update: JobUpdate::Done(Box::new(JobOutcome::Checked {
            point: attncache::plot::SweepPoint {
                knob: 1.0,
                policy: "p".into(),
                hit_rate: 0.01,
                accuracy_exact: None,
                accuracy_cached: None,
                fidelity_mean: 1.0,
                e2e_speedup: 1.0,
                attention_speedup: 1.0,
            },
            queries: 50,
            heads: CheckHeads {
                hit_rate,
                cacheability,
            },
        })),
    });
    app.on_key(parse_key("v").unwrap());
    assert_eq!(app.grid_view, GridView::Stream);
    app.on_key(parse_key("v").unwrap());
    assert_eq!(app.grid_view, GridView::Calibration);
    let screen = render_panel(&mut app, Panel::Grid, 100, 12);
    assert!(
        screen.contains("last check, 50 calibration queries · L1 H2: similarity 0.875, hits 25%"),
        "{screen}"
    );
    app.on_key(parse_key("v").unwrap());
    assert_eq!(app.grid_view, GridView::Query, "nothing pinned");
}

/// Every theme at both sizes, colours included (a buffer's debug form lists
/// each span's style).
#[test]
fn every_theme_at_80x24_and_120x40() {
    for name in attncache::tui::theme::THEME_NAMES {
        for (width, height) in [(80, 24), (120, 40)] {
            let (mut app, _rx) = fixture(Theme::named(name).unwrap());
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|f| view::draw(f, &mut app)).unwrap();
            insta::assert_debug_snapshot!(
                format!("theme_{name}_{width}x{height}"),
                terminal.backend().buffer()
            );
        }
    }
}

/// The research views drawn from a deterministic database (the planted
/// model's: its weights, maps and head types are fixed) and synthetic
/// traces: type tags, the neighbour list, the maps panel comparing with a
/// chosen entry, the pinned grid and the search popup.
#[test]
fn research_view_frames() {
    use attncache::cache::Neighbour;
    use attncache::tui::worker::NeighbourList;
    let (_model_dir, model) = common::planted::planted_model();
    let dir = tempfile::tempdir().unwrap();
    // Five words make seven tokens, the synthetic query's length.
    let texts = [
        "a gripping and moving film",
        "the plot is not fun",
        "the movie was great fun",
        "a bad film and plot",
        "great",
        "the film is a movie and fun",
    ];
    let (mut app, db, _requests) = app_with_database(&model, &texts, dir.path());
    let shape = *model.shape();
    app.mode = Mode::Shadow;
    for (n, text) in ["a triumph", "a gripping, moving film"].iter().enumerate() {
        let mut trace = trace_of(&shape, text, n);
        let neighbour = trace.layers[0].neighbour.as_mut().unwrap();
        (neighbour.entry, neighbour.text) = (0, texts[0].into());
        app.on_event(Event::Ran(Box::new(QueryResult {
            query: text.to_string(),
            trace,
            exact_maps: vec![vec![map(0); shape.heads]; shape.layers],
            db: Some(db.clone()),
        })));
    }
    app.select(0, 1);
    app.info("ready".into());
    let sizes = [(80, 24), (120, 40)];
    let frames = |app: &mut App, name: &str| {
        for (w, h) in sizes {
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(app, w, h));
        }
    };
    app.on_key(parse_key("y").unwrap());
    frames(&mut app, "type_tags");
    app.on_key(parse_key("y").unwrap());
    app.on_key(parse_key("y").unwrap());

    let neighbours = NeighbourList {
        query: "a gripping, moving film".into(),
        layer: 0,
        entries: [(0, 0.0), (2, 0.031), (3, 0.047), (1, 0.052)]
            .map(|(entry, distance)| Neighbour { entry, distance })
            .to_vec(),
    };
    app.on_key(parse_key("n").unwrap());
    app.on_event(Event::Neighbours(Ok(neighbours.clone())));
    frames(&mut app, "neighbours");
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("Enter").unwrap());
    assert_eq!(app.compare, Some(2));
    frames(&mut app, "compare");

    app.on_key(parse_key("n").unwrap());
    app.on_event(Event::Neighbours(Ok(neighbours)));
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("Down").unwrap());
    app.on_key(parse_key("p").unwrap());
    assert_eq!(app.grid_view, GridView::Pinned);
    frames(&mut app, "pinned");

    app.on_key(parse_key("/").unwrap());
    for c in "plot".chars() {
        app.on_key(parse_key(&c.to_string()).unwrap());
    }
    frames(&mut app, "search");
}
