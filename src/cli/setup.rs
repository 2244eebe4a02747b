//! Loading what several subcommands share: model, corpus, database, policy.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;

use crate::cache::{Database, ModelIdentity, Policy};
use crate::data::{Corpus, CorpusOptions, CorpusSpec};
use crate::eval::task_corpus;
use crate::model::{Model, ModelSource};

/// The model and device chosen by the global `--model` and `--device` flags.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// `--model`: a local model directory (default: the fetched default model).
    pub model: Option<&'a Path>,
    /// `--device`.
    pub device: Device,
}

/// Loads the model named by `--model` (or the default one, fetched if needed)
/// onto the `--device`.
pub fn load_model(target: &Target, command: &str) -> anyhow::Result<Arc<Model>> {
    Ok(Arc::new(Model::load(
        &ModelSource::from_arg(target.model),
        &target.device,
        &format!("`attncache {command}`"),
    )?))
}

/// Loads a corpus spec, keeping its first `limit` items, as `model`'s task
/// sees it (a decoder gets every text as the sentiment prompt).
pub fn load_corpus(
    spec: &str,
    options: &CorpusOptions,
    limit: Option<usize>,
    model: &Model,
) -> anyhow::Result<Corpus> {
    task_corpus(
        model,
        CorpusSpec::parse(spec)?.load(options)?.limited(limit),
    )
}

/// Opens the database at `dir` for `model`.
pub fn open_database(dir: &Path, model: &Model) -> anyhow::Result<Arc<Database>> {
    let identity = ModelIdentity::of(model)?;
    Ok(Arc::new(Database::open(dir, &identity)?))
}

/// The policy a command runs with: `--policy` if given, else the database's
/// own `policy.json` (written by `attncache calibrate`), else `strict`.
pub fn load_policy(
    spec: Option<&str>,
    db: Option<&Database>,
    model: &Model,
) -> anyhow::Result<Policy> {
    let shape = model.shape();
    match (spec, db) {
        (Some(spec), _) => Policy::parse(spec, shape),
        (None, Some(db)) if db.dir().join("policy.json").is_file() => {
            let path = db.dir().join("policy.json");
            Policy::parse(
                path.to_str().context("the database path is not UTF-8")?,
                shape,
            )
        }
        _ => Ok(Policy::strict(shape)),
    }
}
