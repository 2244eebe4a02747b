//! `modules dashboard`: the modular view in the terminal, or driven by a key
//! script with `--headless`.

use std::path::PathBuf;
use std::time::Duration;

use super::super::dashboard::DisplayArgs;
use super::super::setup::Target;
use super::{StoreArgs, open};
use crate::modules::load_prompts;
use crate::tui::modular::state::{ModularApp, ModularConfig};
use crate::tui::modular::{run_headless, worker};
use crate::tui::run_terminal;
use crate::tui::theme::Theme;

/// The view's options besides the store's.
#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// Prompts (JSONL) the view streams, one after another.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Milliseconds between stream prompts (after the previous finished).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
    /// How it is shown: a terminal, or headless from a key script.
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(target: &Target, store_args: &StoreArgs, args: &ViewArgs) -> anyhow::Result<()> {
    let display = &args.display;
    let (steps, size) = display.check("modules dashboard")?;
    let opened = open(target, store_args, "modules dashboard")?;
    if opened.recovery.rescale.is_some() {
        anyhow::bail!(
            "the modular view runs without APE's rescaling: drop --rescale (modules run, eval and frontier take it)"
        );
    }
    let prompts = match &args.prompts {
        Some(path) => load_prompts(path, opened.store.schema())?,
        None => Vec::new(),
    };
    let schema_path = store_args
        .schema
        .clone()
        .unwrap_or_else(|| opened.store.dir().join("schema.json"));
    let m = opened.store.manifest();
    let config = ModularConfig {
        theme: Theme::choose(display.theme.as_deref(), display.no_color)?,
        shape: *opened.model.shape(),
        store_label: format!(
            "{} · {} modules · {}",
            m.schema_name,
            m.modules,
            m.encoding.name()
        ),
        positions: opened.positions,
        recovery: opened.recovery.recovery,
        chat: store_args.chat,
        prompts,
        interval: Duration::from_millis(args.interval_ms),
        schema_path,
        paused: display.headless,
        export_dir: std::path::PathBuf::from("attncache-export"),
    };
    let spawned = worker::spawn(opened.model.clone(), opened.store);
    let app = ModularApp::new(config, spawned.requests);
    let outcome = if display.headless {
        let report = run_headless(
            app,
            &spawned.events,
            &steps,
            size,
            Duration::from_secs(display.timeout),
        )?;
        display.print(&report, &report.screen)
    } else {
        run_terminal(app, spawned.events)
    };
    // The app and its request channel are gone: the worker stops (a running
    // rebuild is cancelled and cleans up) and ends.
    let _ = spawned.thread.join();
    outcome
}
