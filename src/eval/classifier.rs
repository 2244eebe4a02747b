//! The downstream task accuracy is measured on: a probe on frozen encoder
//! embeddings, or classification by prompting a decoder.

use super::probe::Probe;
use super::prompt::{ANSWERS, PromptClassifier};
use crate::cache::Database;
use crate::data::Corpus;
use crate::model::Model;

/// Predicts a label from a model's readout.
#[derive(Debug, Clone)]
pub enum Classifier {
    /// A softmax-regression probe on exact sentence embeddings (encoders).
    Probe(Probe),
    /// The next-token logits of each label's answer word (decoders).
    Prompt(PromptClassifier),
}

impl Classifier {
    /// The classifier for `model` evaluated on `queries`: for an encoder a
    /// probe trained on the exact embeddings of `db`'s labelled entries
    /// (`None` with fewer than two labels), for a decoder the prompt
    /// classifier of the labels of the entries and the queries, or of the
    /// question's answers (positive, negative) when they carry none.
    pub fn for_task(
        model: &Model,
        db: &Database,
        queries: &Corpus,
    ) -> anyhow::Result<Option<Self>> {
        let examples: Vec<(&[f32], &str)> = db
            .entries()
            .iter()
            .filter_map(|e| e.label.as_deref().map(|l| (db.embedding(e.id as usize), l)))
            .collect();
        let mut labels: Vec<String> = examples.iter().map(|(_, l)| l.to_string()).collect();
        if model.decoder().is_some() {
            labels.extend(queries.labels());
        }
        labels.sort();
        labels.dedup();
        if model.decoder().is_some() {
            if labels.len() < 2 {
                // Unlabelled texts: the question's own answers, so that
                // cached and exact predictions can still be compared.
                labels = ANSWERS.iter().map(|a| a.to_string()).collect();
            }
            return Ok(Some(Classifier::Prompt(PromptClassifier::new(
                model, &labels,
            )?)));
        }
        if labels.len() < 2 {
            return Ok(None);
        }
        Ok(Some(Classifier::Probe(Probe::train(&examples)?)))
    }

    /// The predicted label of a readout.
    pub fn predict(&self, readout: &[f32]) -> &str {
        match self {
            Classifier::Probe(p) => p.predict(readout),
            Classifier::Prompt(p) => p.predict(readout),
        }
    }

    /// What the accuracy figures measure, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Classifier::Probe(_) => "probe on frozen exact embeddings",
            Classifier::Prompt(_) => "prompted sentiment (label-word next-token logits)",
        }
    }
}
