//! Text corpora: the built-in Rotten Tomatoes splits and user files.

mod rotten;
mod spec;

pub use rotten::{RtSet, Split};
pub use spec::{CorpusOptions, CorpusSpec};

/// One input text, with a label when the corpus has one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// The text.
    pub text: String,
    /// Its label (e.g. `fresh`/`rotten`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A named list of items.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The spec it was loaded from, for reports.
    pub name: String,
    /// The items, in a deterministic order.
    pub items: Vec<Item>,
}

impl Corpus {
    /// Keeps only the first `limit` items (all when `None`).
    pub fn limited(mut self, limit: Option<usize>) -> Self {
        if let Some(n) = limit {
            self.items.truncate(n);
        }
        self
    }

    /// The distinct labels, sorted (empty when unlabelled).
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.items.iter().filter_map(|i| i.label.clone()).collect();
        labels.sort();
        labels.dedup();
        labels
    }
}
