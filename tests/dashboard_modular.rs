//! The modular view without a model: its state machine (keys, events, the
//! stream's clock) and snapshots of its frames at 80×24 and 120×40.

use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use attncache::model::ModelShape;
use attncache::modules::prefill::{Decision, Stages};
use attncache::modules::{Positions, PromptSpec, Recovery};
use attncache::tui::headless::screen_text;
use attncache::tui::keys::parse_key;
use attncache::tui::modular::state::{ModularApp, ModularConfig, Popup};
use attncache::tui::modular::view;
use attncache::tui::modular::worker::{Comparison, Event, Request};
use attncache::tui::theme::Theme;
use crossterm::event::{KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SHAPE: ModelShape = ModelShape {
    layers: 6,
    heads: 3,
    head_dim: 64,
    hidden: 192,
    max_positions: 8192,
};

fn prompt(text: &str) -> PromptSpec {
    PromptSpec {
        modules: vec!["doc-1".into(), "doc-0".into()],
        text: text.into(),
        ..PromptSpec::default()
    }
}

fn app(color: bool, prompts: Vec<PromptSpec>) -> (ModularApp, Receiver<Request>) {
    let (tx, rx) = channel();
    let app = ModularApp::new(
        ModularConfig {
            theme: if color { Theme::DARK } else { Theme::MONO },
            shape: SHAPE,
            store_label: "docs · 2 modules".into(),
            positions: Positions::Contiguous,
            recovery: Recovery::Select(15.0),
            chat: false,
            prompts,
            interval: Duration::from_millis(0),
            schema_path: "schema.toml".into(),
            paused: true,
            export_dir: std::env::temp_dir().join("attncache-test-export"),
        },
        tx,
    );
    (app, rx)
}

fn comparison() -> Comparison {
    let decision = |label: &str, state, tokens, recomputed| Decision {
        label: label.into(),
        state,
        tokens,
        recomputed,
    };
    Comparison {
        label: "[doc-1 doc-0] which document is about a heist?".into(),
        tokens: 412,
        cached: 380,
        recomputed: 57,
        decisions: vec![
            decision("doc-1", "cached", 200, 0),
            decision("doc-0", "cached", 180, 57),
            decision("question", "computed", 32, 0),
        ],
        ttft_ms: [900.0, 450.0, 150.0],
        stages: Stages {
            load_ms: 4.0,
            rotate_ms: 1.0,
            probe_ms: 0.0,
            forward_ms: 140.0,
            logits_ms: 5.0,
            total_ms: 150.0,
        },
        similarity: (0..SHAPE.layers)
            .map(|l| {
                (0..SHAPE.heads)
                    .map(|h| 1.0 - 0.1 * (l + h) as f32 / 2.0)
                    .collect()
            })
            .collect(),
        answers: [" Document 1.".into(), " Document 0.".into()],
        top1_agree: false,
        kl: 0.0421,
        positions: Positions::Contiguous,
        recovery: Recovery::Select(15.0),
    }
}

fn key(app: &mut ModularApp, name: &str) {
    app.on_key(parse_key(name).unwrap());
}

fn screen(app: &mut ModularApp, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| view::draw(f, app)).unwrap();
    screen_text(terminal.backend()).join("\n")
}

/// Sends a prompt and answers it as the worker would.
fn run_once(app: &mut ModularApp, rx: &Receiver<Request>) -> u64 {
    key(app, "n");
    let Ok(Request::Run { seq, .. }) = rx.try_recv() else {
        panic!("n sends the next prompt")
    };
    app.on_event(Event::Ran {
        seq,
        result: Ok(Box::new(comparison())),
    });
    seq
}

#[test]
fn frames_at_80x24_and_120x40() {
    for color in [true, false] {
        let (mut a, rx) = app(color, vec![prompt("which document is about a heist?")]);
        run_once(&mut a, &rx);
        for (w, h) in [(80, 24), (120, 40)] {
            let name = format!("modular_{w}x{h}_{}", if color { "color" } else { "mono" });
            insta::assert_snapshot!(name, screen(&mut a, w, h));
        }
    }
    let (mut a, _rx) = app(true, Vec::new());
    key(&mut a, "?");
    insta::assert_snapshot!("modular_help_120x40", screen(&mut a, 120, 40));
}

/// `D` shows the comparison in large digits (the speedup over exact, each
/// run's time to first token, KL and answers), at both sizes; `D` or Esc
/// goes back; before any run it says it is waiting.
#[test]
fn d_shows_the_demo_view_and_toggles_back() {
    let (mut a, rx) = app(true, vec![prompt("which document is about a heist?")]);
    key(&mut a, "D");
    assert_eq!(a.popup(), Some(Popup::Demo));
    assert!(screen(&mut a, 80, 24).contains("waiting for the first comparison"));
    run_once(&mut a, &rx);
    for (w, h) in [(80, 24), (120, 40)] {
        let frame = screen(&mut a, w, h);
        assert!(
            frame.contains("3.0× faster than the prefix cache"),
            "{frame}"
        );
        assert!(frame.contains("KL 0.0421 · top-1 different"), "{frame}");
        assert!(frame.contains("Document 0."), "{frame}");
        insta::assert_snapshot!(format!("modular_demo_{w}x{h}"), frame);
    }
    // Keys keep working underneath: + re-runs with more recovery.
    key(&mut a, "+");
    assert!(matches!(rx.try_recv(), Ok(Request::Run { .. })));
    assert_eq!(a.popup(), Some(Popup::Demo));
    key(&mut a, "D");
    assert_eq!(a.popup(), None);
    key(&mut a, "D");
    key(&mut a, "Esc");
    assert_eq!(a.popup(), None);
}

#[test]
fn keys_tune_recovery_cycle_modes_and_rerun() {
    let (mut a, rx) = app(true, vec![prompt("a"), prompt("b")]);
    run_once(&mut a, &rx);
    key(&mut a, "+");
    assert_eq!(a.recovery, Recovery::Select(20.0));
    let Ok(Request::Run {
        recovery, prompt, ..
    }) = rx.try_recv()
    else {
        panic!("+ re-runs at once")
    };
    assert_eq!(recovery, Recovery::Select(20.0));
    assert_eq!(prompt.text, "a");
    key(&mut a, "-");
    key(&mut a, "-");
    assert_eq!(a.recovery, Recovery::Select(10.0));
    // m: select → probe → probe-modules → none with the other positions
    // → first → select; + and - step the question-aware kinds too.
    key(&mut a, "m");
    assert_eq!(
        a.recovery,
        Recovery::Probe {
            percent: 5.0,
            layers: 0
        }
    );
    key(&mut a, "+");
    assert_eq!(
        a.recovery,
        Recovery::Probe {
            percent: 10.0,
            layers: 0
        }
    );
    key(&mut a, "m");
    assert_eq!(a.recovery, Recovery::ProbeModules(1));
    key(&mut a, "+");
    assert_eq!(a.recovery, Recovery::ProbeModules(2));
    key(&mut a, "m");
    assert_eq!(
        (a.positions, a.recovery),
        (Positions::Schema, Recovery::None)
    );
    key(&mut a, "+");
    assert!(
        a.status.as_ref().unwrap().error,
        "naive reuse has no setting"
    );
    key(&mut a, "m");
    assert_eq!(a.recovery, Recovery::First(16));
    key(&mut a, "+");
    assert_eq!(a.recovery, Recovery::First(32));
    key(&mut a, "m");
    assert_eq!(a.recovery, Recovery::Select(15.0));
    // A stale answer (an earlier request) is ignored.
    let in_flight = a.in_flight;
    a.on_event(Event::Ran {
        seq: 1,
        result: Err("old".into()),
    });
    assert_eq!(a.in_flight, in_flight);
    // An error of the current request lands in the status line.
    a.on_event(Event::Ran {
        seq: in_flight.unwrap(),
        result: Err("the prompt is empty".into()),
    });
    assert!(a.status.as_ref().unwrap().error);
    assert_eq!(a.in_flight, None);
}

#[test]
fn typing_the_stream_popups_and_the_rebuild_form() {
    let (mut a, rx) = app(false, vec![prompt("a"), prompt("b")]);
    // The stream sends only when resumed, one prompt at a time.
    a.tick(Instant::now());
    assert!(rx.try_recv().is_err());
    key(&mut a, "Space");
    a.tick(Instant::now());
    let Ok(Request::Run { seq, prompt, .. }) = rx.try_recv() else {
        panic!("the stream sends")
    };
    assert_eq!(prompt.text, "a");
    a.tick(Instant::now());
    assert!(rx.try_recv().is_err(), "nothing more while one is running");
    a.on_event(Event::Ran {
        seq,
        result: Ok(Box::new(comparison())),
    });
    a.tick(Instant::now());
    let Ok(Request::Run { prompt, .. }) = rx.try_recv() else {
        panic!("the next one follows")
    };
    assert_eq!(prompt.text, "b");
    key(&mut a, "Space");
    // A typed record.
    key(&mut a, "i");
    for c in r#"{"modules": ["doc-0"], "text": "q"}"#.chars() {
        a.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char(c),
            crossterm::event::KeyModifiers::NONE,
        ));
    }
    key(&mut a, "Enter");
    let Ok(Request::Run { prompt, .. }) = rx.try_recv() else {
        panic!("Enter runs the typed prompt")
    };
    assert_eq!(prompt.modules, vec!["doc-0".to_string()]);
    // Help opens and Esc closes it; the rebuild form sends a rebuild.
    key(&mut a, "?");
    assert_eq!(a.popup(), Some(Popup::Help));
    key(&mut a, "Esc");
    assert_eq!(a.popup(), None);
    key(&mut a, "R");
    key(&mut a, "Backspace");
    key(&mut a, "Backspace");
    key(&mut a, "Backspace");
    key(&mut a, "Backspace");
    for c in "json".chars() {
        a.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char(c),
            crossterm::event::KeyModifiers::NONE,
        ));
    }
    key(&mut a, "Enter");
    let Ok(Request::Rebuild { schema, cancel }) = rx.try_recv() else {
        panic!("Enter starts the rebuild")
    };
    assert_eq!(schema, std::path::PathBuf::from("schema.json"));
    a.on_event(Event::Progress { done: 1, total: 4 });
    assert!(screen(&mut a, 80, 24).contains("rebuild [█████"));
    key(&mut a, "Esc");
    assert!(
        cancel.load(std::sync::atomic::Ordering::Relaxed),
        "Esc cancels"
    );
    a.on_event(Event::Rebuilt(Err(
        "build cancelled; the store is unchanged".into(),
    )));
    assert_eq!(a.job, None);
    key(&mut a, "q");
    assert!(a.quit);
}

#[test]
fn f_shows_the_sessions_frontier_with_the_current_setting_moving() {
    let (mut a, rx) = app(true, vec![prompt("a")]);
    // Runs of three settings, as the worker reports them.
    for (recovery, ttft, kl) in [
        (Recovery::None, 30.0, 0.2),
        (Recovery::Select(15.0), 150.0, 0.02),
        (Recovery::Select(15.0), 170.0, 0.04),
        (Recovery::Select(50.0), 450.0, 0.001),
    ] {
        key(&mut a, "n");
        let Ok(Request::Run { seq, .. }) = rx.try_recv() else {
            panic!("n sends the next prompt")
        };
        let mut c = comparison();
        c.recovery = recovery;
        c.ttft_ms = [900.0, 850.0, ttft];
        c.kl = kl;
        a.on_event(Event::Ran {
            seq,
            result: Ok(Box::new(c)),
        });
    }
    let points = a.session_frontier();
    assert_eq!(points.len(), 3);
    let select = points
        .iter()
        .find(|p| p.setting == "contiguous · select:15")
        .unwrap();
    assert_eq!(select.runs, 2);
    assert!((select.speedup - 1800.0 / 320.0).abs() < 1e-9);
    assert!((select.kl - 0.03).abs() < 1e-9);
    assert!(select.current);
    key(&mut a, "f");
    assert!(a.show_frontier);
    let text = screen(&mut a, 80, 24);
    assert!(text.contains("Frontier"), "{text}");
    assert!(
        text.contains("current contiguous · select:15: 5.6× over"),
        "{text}"
    );
    // + moves the current setting to another point (not run yet here).
    key(&mut a, "+");
    let text = screen(&mut a, 120, 40);
    assert!(text.contains("select:20: not run yet"), "{text}");
    key(&mut a, "f");
    assert!(screen(&mut a, 80, 24).contains("Layer × head"));
}

/// The latency panel's summary counts only runs of the shown setting; `H`
/// lists every run with its own setting, speedups, KL and top-1.
#[test]
fn h_lists_every_run_with_its_own_setting() {
    let (mut a, rx) = app(false, vec![prompt("which document is about a heist?")]);
    run_once(&mut a, &rx);
    // A second run at another setting, slower and agreeing.
    key(&mut a, "+");
    let Ok(Request::Run { seq, .. }) = rx.try_recv() else {
        panic!("+ re-runs")
    };
    let mut other = comparison();
    other.recovery = Recovery::Select(20.0);
    other.ttft_ms = [900.0, 450.0, 300.0];
    other.top1_agree = true;
    other.kl = 0.0050;
    a.on_event(Event::Ran {
        seq,
        result: Ok(Box::new(other)),
    });
    let frame = screen(&mut a, 120, 40);
    assert!(
        frame.contains("1 runs of this setting: 3.0× exact"),
        "{frame}"
    );
    key(&mut a, "H");
    assert_eq!(a.popup(), Some(Popup::History));
    let frame = screen(&mut a, 120, 40);
    assert!(frame.contains("Runs · 2 this session"), "{frame}");
    let rows: Vec<&str> = frame.lines().filter(|l| l.contains("select:")).collect();
    assert!(
        rows.iter()
            .any(|r| r.contains("select:20") && r.contains("3.0×") && r.contains("0.0050")),
        "{frame}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("select:15") && r.contains("6.0×") && r.contains("differ")),
        "{frame}"
    );
    insta::assert_snapshot!("modular_history_120x40", frame);
    key(&mut a, "H");
    assert_eq!(a.popup(), None);
}

/// The app's tab bar over the modular view and over a Modules tab that
/// cannot serve: `1`/`2` and clicks on the bar switch, a tab's typing keeps
/// its digits, and each frame fits 80×24 and 120×40.
#[test]
fn the_tab_bar_switches_between_tabs() {
    use attncache::tui::Interactive;
    use attncache::tui::shell::{ModulesSettings, Shell, Tab, TabView, Waiting};
    let (mut modular, rx) = app(false, vec![prompt("which document is about a heist?")]);
    run_once(&mut modular, &rx);
    let settings = ModulesSettings {
        theme: Theme::MONO,
        positions: Positions::Contiguous,
        recovery: Recovery::None,
        chat: false,
        interval: Duration::from_millis(0),
        paused: true,
        export_dir: "unused".into(),
    };
    let message = "cannot open the module store /no/store: build one with `attncache --model \
                   smollm2 modules build --schema FILE --out /no/store`";
    let tabs = vec![
        Tab {
            title: "Modules",
            detail: "tiny · docs".into(),
            view: TabView::Modules(Box::new(modular)),
        },
        Tab {
            title: "Other",
            detail: "no store".into(),
            view: TabView::Waiting(Box::new(Waiting::unavailable(message.into(), settings))),
        },
    ];
    let (tx, _events) = channel();
    let mut shell = Shell::new(tabs, Theme::MONO, tx);
    shell.show(0);
    let frame = |shell: &mut Shell, w: u16, h: u16| {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal.draw(|f| shell.draw(f, f.area())).unwrap();
        screen_text(terminal.backend()).join("\n")
    };
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("shell_modules_{w}x{h}"), frame(&mut shell, w, h));
    }
    shell.key(parse_key("2").unwrap());
    assert_eq!(shell.active(), 1);
    let waiting = frame(&mut shell, 80, 24);
    assert!(
        waiting.contains("cannot open the module store"),
        "{waiting}"
    );
    insta::assert_snapshot!("shell_waiting_80x24", waiting);
    // A click on the first tab's title goes back.
    shell.mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 2,
        row: 0,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(shell.active(), 0);
    // While typing a prompt, `2` is text.
    shell.key(parse_key("i").unwrap());
    assert!(shell.typing());
    shell.key(parse_key("2").unwrap());
    assert_eq!(shell.active(), 0);
    shell.key(parse_key("Esc").unwrap());
    shell.key(parse_key("q").unwrap());
    assert!(shell.quit());
}

/// `e` writes the view as JSON (settings, the current comparison, every
/// run, the session's frontier) and the frontier as a plot; before any run
/// it says there is nothing to export.
#[test]
fn e_exports_the_view_and_the_sessions_frontier() {
    let (mut a, rx) = app(false, vec![prompt("which document is about a heist?")]);
    let dir = tempfile::tempdir().unwrap();
    a.export_dir = dir.path().join("out");
    key(&mut a, "e");
    assert!(
        a.status
            .as_ref()
            .unwrap()
            .text
            .contains("nothing to export yet")
    );
    run_once(&mut a, &rx);
    key(&mut a, "e");
    let start = Instant::now();
    while a.exporting() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the export hangs"
        );
        std::thread::sleep(Duration::from_millis(10));
        a.tick(Instant::now());
    }
    let status = a.status.clone().unwrap();
    assert!(
        !status.error && status.text.starts_with("wrote "),
        "{}",
        status.text
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let json = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    assert_eq!(v["runs"][0]["speedup_vs_exact"], 6.0);
    assert_eq!(v["frontier"][0]["setting"], "contiguous · select:15");
    assert_eq!(v["current"]["kl"], 0.0421);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().ends_with("-frontier.svg")),
        "{files:?}"
    );
}
