//! `attncache dashboard` (the default command): the interactive dashboard, or
//! the same driven by a key script with `--headless`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;

use anyhow::Context;

use super::setup::{Target, load_model, load_policy};
use crate::cache::{Database, ModelIdentity};
use crate::data::{CorpusOptions, CorpusSpec};
use crate::engine::Engine;
use crate::fetch::Fetcher;
use crate::model::Model;
use crate::model::device_name;
use crate::modules::{ModuleStore, Positions, Recovery, load_prompts};
use crate::tui::app::{App, AppConfig, ModelInfo};
use crate::tui::config::{self, Config, KeyMap};
use crate::tui::headless::run_script;
use crate::tui::setup::{self, Ready};
use crate::tui::shell::{ModulesSettings, Shell, ShellEvent, Tab, TabView, Waiting, forward};
use crate::tui::theme::Theme;
use crate::tui::worker::{self, JobRequest, JobSettings};
use crate::tui::{headless, run_terminal};

/// Texts a decoder's default database is built from.
const DECODER_BUILD_LIMIT: usize = 500;

/// The dashboard's options.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// The database (default: one per model under $ATTNCACHE_HOME/databases,
    /// built from --build-corpus in the background when missing).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// strict, global:D, global:D+carry, paper:D or a policy file (default: the database's
    /// policy.json, else strict).
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// The split the demo stream replays (default rt:test).
    #[arg(long, value_name = "SPEC")]
    pub split: Option<String>,
    /// Milliseconds between stream queries (default 1500).
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<u64>,
    /// The config file (default: $XDG_CONFIG_HOME/attncache/config.toml,
    /// else ~/.config/attncache/config.toml); it sets only what it names,
    /// flags win over it; `W` in the dashboard writes it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The corpus a missing database is built from (and the rebuild form's default).
    #[arg(long, default_value = "rt:db", value_name = "SPEC")]
    pub build_corpus: String,
    /// Build from the first N texts only (default: all for an encoder,
    /// 500 for a decoder, whose 270 maps per text take ~3 MB).
    #[arg(long, value_name = "N")]
    pub build_limit: Option<usize>,
    /// The split calibration and threshold checks run on.
    #[arg(long, default_value = "rt:calib", value_name = "SPEC")]
    pub calib_split: String,
    /// Queries of that split used by calibration and checks.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub calib_limit: usize,
    /// Where `e` writes (default: ./attncache-export).
    #[arg(long, value_name = "DIR")]
    pub export_dir: Option<PathBuf>,
    /// The Modules tab's module store (default: the one it prepares under
    /// $ATTNCACHE_HOME/stores on first use).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The prompts the Modules tab streams (JSONL; with --store).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// The tab shown first: maps or modules (`1`/`2` switch).
    #[arg(long, default_value = "maps", value_name = "TAB")]
    pub tab: String,
    /// How it is shown: a terminal, or headless from a key script.
    #[command(flatten)]
    pub display: DisplayArgs,
}

/// How a dashboard view is shown (every view takes the same).
#[derive(Debug, Clone, clap::Args)]
pub struct DisplayArgs {
    /// No colours (also when NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,
    /// dark (default), light, 16 (the 16 ANSI colours) or mono; --no-color
    /// and NO_COLOR win.
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,
    /// Run without a terminal, driven by --keys; print the final state.
    #[arg(long)]
    pub headless: bool,
    /// Headless script, comma-separated: keys (m, +, Enter, Esc, Tab, Up…),
    /// type:TEXT, run:TEXT, click:X:Y, wait, sleep:MS. The stream starts
    /// paused (Space starts it).
    #[arg(long, value_delimiter = ',', value_name = "STEPS")]
    pub keys: Vec<String>,
    /// Headless screen size.
    #[arg(long, default_value = "120x40", value_name = "WxH")]
    pub screen: String,
    /// Headless: print the final state as JSON (default: the last frame).
    #[arg(long)]
    pub json: bool,
    /// Headless: seconds a `wait` may take.
    #[arg(long, default_value_t = 600, value_name = "S")]
    pub timeout: u64,
}

impl DisplayArgs {
    /// Fails without a terminal unless headless; returns the script's steps
    /// and the headless screen size.
    pub fn check(&self, command: &str) -> anyhow::Result<(Vec<headless::Step>, (u16, u16))> {
        let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
        if !self.headless && !interactive {
            anyhow::bail!(
                "the dashboard needs a terminal: run it in one, or script it with \
                 `attncache {command} --headless --keys ...`, or use a subcommand (see --help)"
            );
        }
        Ok((
            headless::parse_script(&self.keys)?,
            parse_size(&self.screen)?,
        ))
    }

    /// Prints a headless run's final state: JSON, or the last frame.
    pub fn print<R: serde::Serialize>(&self, report: &R, screen: &[String]) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(report)?);
        } else {
            println!("{}", screen.join("\n"));
        }
        Ok(())
    }
}

/// Opens the dashboard.
pub fn run(target: &Target, args: DashboardArgs) -> anyhow::Result<()> {
    let display = &args.display;
    let (steps, size) = display.check("dashboard")?;
    // The config file first: a bad one stops everything before any work.
    let config_path = args.config.clone().or_else(config::default_path);
    let config = match &config_path {
        Some(path) => Config::load(path, args.config.is_some())?,
        None => Config::default(),
    };
    let keymap = KeyMap::from_config(&config.keys)
        .map_err(|(key, e)| anyhow::anyhow!("config key `keys.{key}`: {e}"))?;
    let theme = Theme::choose(
        display.theme.as_deref().or(config.theme.as_deref()),
        display.no_color,
    )?;
    let model_arg = target
        .model
        .map(|p| p.to_string_lossy().into_owned())
        .or(config.model.clone());
    let target = &Target {
        model: model_arg.as_deref().map(Path::new),
        device: target.device.clone(),
        resident: target.resident,
    };
    target.check_resident()?;
    let split = args
        .split
        .clone()
        .or(config.split.clone())
        .unwrap_or_else(|| "rt:test".into());
    let interval_ms = args.interval_ms.or(config.interval_ms).unwrap_or(1500);
    let model = load_model(target, "dashboard")?;
    // Raw texts: the engine thread asks a decoder each one as the task prompt.
    let stream = CorpusSpec::parse(&split)?.load(&CorpusOptions::default())?;
    let model_name = model
        .files
        .dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let db_dir = match args.db.as_ref().or(config.db.as_ref()) {
        Some(dir) => dir.clone(),
        None => Fetcher::from_env()?
            .home()
            .join("databases")
            .join(&model_name),
    };
    let identity = ModelIdentity::of(&model)?;
    let db = if db_dir.join("manifest.json").is_file() {
        let mut db = Database::open(&db_dir, &identity).with_context(|| {
            format!(
                "cannot open the database {} (delete it to rebuild, or pass another --db)",
                db_dir.display()
            )
        })?;
        if target.resident {
            db.make_resident(model.device())?;
        }
        Some(Arc::new(db))
    } else {
        None
    };
    let policy = load_policy(
        args.policy.as_deref().or(config.policy.as_deref()),
        db.as_deref(),
        &model,
    )?;
    let engine = match &db {
        Some(db) => Engine::new(model.clone(), db.clone(), policy.clone())?,
        None => Engine::exact_only(model.clone()),
    };
    let (request_tx, request_rx) = channel();
    let (event_tx, event_rx) = channel();
    let settings = JobSettings {
        calib_split: args.calib_split.clone(),
        calib_limit: args.calib_limit,
    };
    let worker = worker::spawn(engine, settings, request_rx, event_tx);
    let mut app = App::new(
        AppConfig {
            model: ModelInfo {
                name: model_name,
                shape: *model.shape(),
                device: device_name(&target.device),
            },
            db: db.clone(),
            db_dir: db_dir.clone(),
            policy,
            stream: (
                stream.name.clone(),
                stream.items.into_iter().map(|i| i.text).collect(),
            ),
            interval: Duration::from_millis(interval_ms),
            theme,
            export_dir: args
                .export_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("attncache-export")),
        },
        request_tx,
    );
    app.keymap = keymap;
    app.config_path = config_path;
    app.model_arg = model_arg;
    let build_limit = args
        .build_limit
        .or(model.decoder().is_some().then_some(DECODER_BUILD_LIMIT));
    app.rebuild.corpus = args.build_corpus.clone();
    app.rebuild.limit = build_limit.map_or(String::new(), |n| n.to_string());
    if db.is_none() {
        app.start_job(JobRequest::Rebuild {
            corpus: args.build_corpus.clone(),
            limit: build_limit,
            out: db_dir.clone(),
        });
        app.info(format!(
            "building the database {} from {} in the background; exact mode until it is ready",
            db_dir.display(),
            args.build_corpus
        ));
    }
    if display.headless {
        app.stream.paused = true;
    }
    let maps_detail = match &db {
        Some(db) => format!("{} · {} maps entries", app.model.name, db.entries().len()),
        None => format!("{} · database building", app.model.name),
    };
    let section = &config.modules;
    let modules_settings = ModulesSettings {
        theme,
        positions: section
            .positions
            .as_deref()
            .map_or(Ok(Positions::Contiguous), Positions::parse)?,
        recovery: section
            .recovery
            .as_deref()
            .map_or(Ok(Recovery::None), Recovery::parse)?,
        chat: section.chat.unwrap_or(false),
        interval: Duration::from_millis(interval_ms),
        paused: display.headless,
        export_dir: args
            .export_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("attncache-export")),
    };
    let store_args = (
        args.store.clone().or(section.store.clone()),
        args.prompts.clone().or(section.prompts.clone()),
    );
    let (modules, ready) = modules_tab(store_args, &model, modules_settings)?;
    let (tx, rx) = channel();
    forward(event_rx, tx.clone(), ShellEvent::Maps);
    let tabs = vec![
        Tab {
            title: "Maps",
            detail: maps_detail,
            view: TabView::Maps(Box::new(app)),
        },
        modules,
    ];
    let first = match args.tab.as_str() {
        "maps" => 0,
        "modules" => 1,
        other => anyhow::bail!("unknown --tab {other:?}: use maps or modules"),
    };
    let mut shell = Shell::new(tabs, theme, tx);
    if let Some(ready) = ready {
        shell.open_modules(1, ready);
    }
    shell.show(first);
    let outcome = if display.headless {
        let screen = run_script(
            &mut shell,
            &rx,
            &steps,
            size,
            Duration::from_secs(display.timeout),
        )?;
        display.print(&shell.report(screen.clone()), &screen)
    } else {
        run_terminal(shell, rx)
    };
    // The app (and with it the request channel) is gone: the engine thread
    // cancels any job, which removes its temporary files, and ends.
    let _ = worker.join();
    outcome
}

/// The Modules tab: the store `--store` names (SmolLM2, or the Maps tab's
/// model when that is a decoder), else the default store when it has been
/// built, else a tab that prepares it on first use. A store that does not
/// open leaves the tab saying why and how to fix it; the Maps tab works on.
fn modules_tab(
    (store, prompts): (Option<PathBuf>, Option<PathBuf>),
    maps_model: &Arc<Model>,
    settings: ModulesSettings,
) -> anyhow::Result<(Tab, Option<Ready>)> {
    let decoder = || -> anyhow::Result<Arc<Model>> {
        match maps_model.decoder() {
            Some(_) => Ok(maps_model.clone()),
            None => setup::load_smollm2(),
        }
    };
    let waiting = |w: Waiting, detail: String| Tab {
        title: "Modules",
        detail,
        view: TabView::Waiting(Box::new(w)),
    };
    let opened = match &store {
        Some(dir) => {
            let model = decoder()?;
            let label = dir.display().to_string();
            let store = ModelIdentity::of(&model).and_then(|id| Ok(ModuleStore::open(dir, &id)?));
            let store = match store {
                Ok(store) => store,
                Err(e) => {
                    let message = format!(
                        "{e:#} — build one with `attncache --model smollm2 modules build --schema FILE --out {label}`"
                    );
                    return Ok((
                        waiting(Waiting::unavailable(message, settings), label),
                        None,
                    ));
                }
            };
            let prompts = match &prompts {
                Some(path) => load_prompts(path, store.schema())?,
                None => Vec::new(),
            };
            Some(Ready {
                schema_path: store.dir().join("schema.json"),
                model,
                store,
                prompts,
            })
        }
        None => {
            // SmolLM2 is loaded here only when the default store exists.
            let dir = setup::default_dir(&Fetcher::from_env()?);
            match setup::default_built(&dir) {
                true => setup::open_default(&dir, decoder()?)?,
                false => None,
            }
        }
    };
    let tab = waiting(Waiting::default_store(settings), "no store yet".into());
    Ok((tab, opened))
}

/// Parses `WxH`.
fn parse_size(spec: &str) -> anyhow::Result<(u16, u16)> {
    spec.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|&(w, h)| w > 0 && h > 0)
        .ok_or_else(|| anyhow::anyhow!("bad --screen `{spec}`: use WIDTHxHEIGHT, e.g. 120x40"))
}
