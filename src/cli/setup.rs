//! Loading what several subcommands share: model, corpus, database, policy.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;

use crate::cache::{Database, ModelIdentity, Policy};
use crate::data::{Corpus, CorpusOptions, CorpusSpec};
use crate::eval::{few_shot_corpus, few_shot_prompt, pick_shots, task_corpus};
use crate::model::{Model, ModelSource};

/// The model and device chosen by the global `--model` and `--device` flags.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// `--model`: a local model directory (default: the fetched default model).
    pub model: Option<&'a Path>,
    /// `--device`.
    pub device: Device,
    /// `--resident`: stores kept in device memory.
    pub resident: bool,
}

impl Target<'_> {
    /// Fails on `--resident` with the CPU, where stores are read from their
    /// memory map already.
    pub fn check_resident(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.resident || !self.device.is_cpu(),
            "--resident keeps stores in device memory, and the CPU reads them from their memory map already: pass --device cuda or drop --resident"
        );
        Ok(())
    }
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

/// The split the few-shot examples come from (the first labelled reviews
/// of the database split, the same in every prompt).
pub const SHOTS_SPLIT: &str = "rt:db";

/// Loads a corpus spec, keeping its first `limit` items, as `model`'s task
/// sees it: a decoder gets every text as the sentiment prompt, after
/// `shots` labelled examples of [`SHOTS_SPLIT`] when `shots` > 0.
pub fn load_corpus(
    spec: &str,
    options: &CorpusOptions,
    limit: Option<usize>,
    shots: usize,
    model: &Model,
) -> anyhow::Result<Corpus> {
    let examples = examples(shots, model)?;
    let corpus = CorpusSpec::parse(spec)?.load(options)?.limited(limit);
    match shots {
        0 => task_corpus(model, corpus),
        _ => few_shot_corpus(model, corpus, &examples),
    }
}

/// The prompt [`load_corpus`] makes of an empty text with `shots` examples:
/// the template every prompt starts with, which a prefix cache holds.
pub fn task_template(model: &Model, shots: usize) -> anyhow::Result<String> {
    few_shot_prompt(model, "", &examples(shots, model)?)
}

/// The `shots` examples of [`SHOTS_SPLIT`] (none for 0); an encoder is
/// refused before anything is loaded.
fn examples(shots: usize, model: &Model) -> anyhow::Result<Vec<(String, String)>> {
    if shots == 0 {
        return Ok(Vec::new());
    }
    anyhow::ensure!(
        model.decoder().is_some(),
        "few-shot prompts need a decoder: pass --model smollm2 or qwen2.5-0.5b (an encoder embeds the text alone)"
    );
    let pool = CorpusSpec::parse(SHOTS_SPLIT)?.load(&CorpusOptions::default())?;
    pick_shots(&pool, shots)
}

/// Opens the database at `dir` for `model`, first padding the model's
/// inputs as the database's were (`build --pad-to`), so every later run
/// sees inputs of the database's one length; with `--resident` its maps are
/// copied into the model's device memory.
pub fn open_database(
    target: &Target,
    dir: &Path,
    model: &mut Arc<Model>,
) -> anyhow::Result<Arc<Database>> {
    target.check_resident()?;
    if let Some(length) = Database::padding_of(dir)? {
        pad_model(model, length)?;
    }
    let identity = ModelIdentity::of(model)?;
    let mut db = Database::open(dir, &identity)?;
    if target.resident {
        db.make_resident(model.device())?;
    }
    Ok(Arc::new(db))
}

/// Makes `model` a copy that pads (and cuts) every input to `length`
/// tokens, unless it already does.
pub fn pad_model(model: &mut Arc<Model>, length: usize) -> anyhow::Result<()> {
    if model.padded_to() != Some(length) {
        let mut padded = (**model).clone();
        padded.pad_inputs(length)?;
        *model = Arc::new(padded);
    }
    Ok(())
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
        (Some(spec), _) if spec.starts_with("oracle") && !Path::new(spec).is_file() => {
            anyhow::bail!(
                "{spec} is not a policy a cache can run (the oracle needs the exact maps): ask for it with `eval --compare oracle`, `sweep --oracle`, `report --oracle` or `bench --oracle S`"
            )
        }
        (Some(spec), _) => Policy::parse(spec, shape),
        (None, Some(db)) if db.policy_path().is_file() => {
            let path = db.policy_path();
            Policy::parse(
                path.to_str().context("the database path is not UTF-8")?,
                shape,
            )
        }
        _ => Ok(Policy::strict(shape)),
    }
}
