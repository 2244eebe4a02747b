//! Parsing a corpus spec: a built-in split (`rt:test`, `rt-plot:db`, …) or a
//! file (`.txt` one input per line, `.jsonl` with `text`/`label`, `.csv`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::rotten::{self, RtSet, Split};
use super::{Corpus, Item};
use crate::fetch::{Fetcher, ROTTEN_TOMATOES};

/// Column choices for CSV corpora.
#[derive(Debug, Clone, Default)]
pub struct CorpusOptions {
    /// The CSV column holding the text (default `text`).
    pub text_column: Option<String>,
    /// The CSV column holding the label, if any.
    pub label_column: Option<String>,
}

/// Where a corpus comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusSpec {
    /// A built-in Rotten Tomatoes split.
    Rotten(RtSet, Split),
    /// A user file.
    File(PathBuf),
}

impl CorpusSpec {
    /// Parses `rt:SPLIT`, `rt-plot:SPLIT` (SPLIT = db, calib, test, all) or a path.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let builtin = |set, split: &str| {
            Split::parse(split)
                .map(|s| CorpusSpec::Rotten(set, s))
                .with_context(|| {
                    format!("unknown split `{split}` in `{spec}`: use db, calib, test or all")
                })
        };
        if let Some(split) = spec.strip_prefix("rt:") {
            return builtin(RtSet::Reviews, split);
        }
        if let Some(split) = spec.strip_prefix("rt-plot:") {
            return builtin(RtSet::Plots, split);
        }
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!(
                "corpus `{spec}` is neither a built-in split (rt:db, rt:calib, rt:test, rt-plot:…) nor a file"
            );
        }
        Ok(CorpusSpec::File(path))
    }

    /// Loads the corpus, fetching the Rotten Tomatoes data if a built-in split
    /// needs it.
    pub fn load(&self, options: &CorpusOptions) -> anyhow::Result<Corpus> {
        match self {
            CorpusSpec::Rotten(set, split) => {
                let dir = Fetcher::from_env()?.ensure(&ROTTEN_TOMATOES, "the built-in splits")?;
                rotten::load(
                    &dir.join("rotten_tomatoes.csv"),
                    *set,
                    *split,
                    self.to_string(),
                )
            }
            CorpusSpec::File(path) => load_file(path, options),
        }
    }
}

impl std::fmt::Display for CorpusSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorpusSpec::Rotten(set, split) => {
                let set = match set {
                    RtSet::Reviews => "rt",
                    RtSet::Plots => "rt-plot",
                };
                let split = format!("{split:?}").to_lowercase();
                write!(f, "{set}:{split}")
            }
            CorpusSpec::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn load_file(path: &Path, options: &CorpusOptions) -> anyhow::Result<Corpus> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    let items = match ext.as_str() {
        "jsonl" => load_jsonl(path)?,
        "csv" => load_csv(path, options)?,
        _ => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {name}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| Item {
                text: l.to_string(),
                label: None,
            })
            .collect(),
    };
    if items.is_empty() {
        bail!("{name} holds no texts");
    }
    Ok(Corpus { name, items })
}

fn load_jsonl(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is not JSON", path.display(), i + 1))?;
        let text = value
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| {
                format!(
                    "{} line {} has no string `text` field",
                    path.display(),
                    i + 1
                )
            })?;
        let label = value.get("label").map(|l| match l {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        items.push(Item {
            text: text.trim().to_string(),
            label,
        });
    }
    Ok(items)
}

fn load_csv(path: &Path, options: &CorpusOptions) -> anyhow::Result<Vec<Item>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let find = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{} has no column `{name}` (columns: {}): pass --text-column/--label-column",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let text_col = find(options.text_column.as_deref().unwrap_or("text"))?;
    let label_col = options.label_column.as_deref().map(find).transpose()?;
    let mut items = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.with_context(|| format!("{} row {} is malformed", path.display(), i + 2))?;
        let text = record[text_col].trim();
        if text.is_empty() {
            continue;
        }
        items.push(Item {
            text: text.to_string(),
            label: label_col.map(|c| record[c].to_string()),
        });
    }
    Ok(items)
}
