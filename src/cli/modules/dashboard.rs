//! `modules dashboard`: the modular view in the terminal, or driven by a key
//! script with `--headless`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::super::dashboard::parse_size;
use super::super::setup::Target;
use super::{StoreArgs, open};
use crate::modules::load_prompts;
use crate::tui::headless::parse_script;
use crate::tui::modular::state::{ModularApp, ModularConfig};
use crate::tui::modular::{run_headless, run_terminal, worker};
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
    /// No colours (also when NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,
    /// Run without a terminal, driven by --keys; print the final state.
    #[arg(long)]
    pub headless: bool,
    /// Headless script, comma-separated: keys (m, +, n, Enter, Esc, Tab, Up…),
    /// type:TEXT, run:TEXT, click:X,Y, wait, sleep:MS. The stream starts
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

pub fn run(target: &Target, store_args: &StoreArgs, args: &ViewArgs) -> anyhow::Result<()> {
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !args.headless && !interactive {
        anyhow::bail!(
            "the modular view needs a terminal: run it in one, or script it with \
             `attncache modules dashboard --headless --keys ...`"
        );
    }
    let steps = parse_script(&args.keys)?;
    let size = parse_size(&args.screen)?;
    let opened = open(target, store_args, "modules dashboard")?;
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
        theme: Theme::from_env(args.no_color),
        shape: *opened.model.shape(),
        store_label: format!("{} · {} modules", m.schema_name, m.modules),
        positions: opened.positions,
        recovery: opened.recovery,
        chat: store_args.chat,
        prompts,
        interval: Duration::from_millis(args.interval_ms),
        schema_path,
        paused: args.headless,
    };
    let spawned = worker::spawn(opened.model.clone(), opened.store);
    let app = ModularApp::new(config, spawned.requests);
    let outcome = if args.headless {
        let report = run_headless(
            app,
            &spawned.events,
            &steps,
            size,
            Duration::from_secs(args.timeout),
        )?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.screen.join("\n"));
        }
        Ok(())
    } else {
        run_terminal(app, spawned.events)
    };
    // The app and its request channel are gone: the worker stops (a running
    // rebuild is cancelled and cleans up) and ends.
    let _ = spawned.thread.join();
    outcome
}
