//! Classification by prompting, for decoders: each text is asked as a chat
//! question about its sentiment (our template), and the label whose answer
//! word gets the larger next-token logit wins. Prefill only, like the
//! paper's MMLU setup.

use candle_core::Tensor;

use crate::data::Corpus;
use crate::model::Model;

/// The question put before every text (written for this project).
pub const SENTIMENT_QUESTION: &str =
    "Is the sentiment of this movie text positive or negative? Answer with one word.";

/// The answers the question asks for.
pub const ANSWERS: [&str; 2] = ["positive", "negative"];

/// `text` as the sentiment question in the model's chat template.
pub fn sentiment_prompt(model: &Model, text: &str) -> anyhow::Result<String> {
    model.chat_prompt(&format!("{SENTIMENT_QUESTION}\n\n{text}"))
}

/// A text as the model's task sees it: unchanged for an encoder, asked as
/// the sentiment question ([`sentiment_prompt`]) for a decoder.
pub fn task_text(model: &Model, text: &str) -> anyhow::Result<String> {
    if model.decoder().is_some() {
        sentiment_prompt(model, text)
    } else {
        Ok(text.to_string())
    }
}

/// Every text of `corpus` through [`task_text`].
pub fn task_corpus(model: &Model, mut corpus: Corpus) -> anyhow::Result<Corpus> {
    if model.decoder().is_some() {
        for item in &mut corpus.items {
            item.text = sentiment_prompt(model, &item.text)?;
        }
    }
    Ok(corpus)
}

/// The text inside a sentiment prompt (for display), or the whole text when
/// it is not one.
pub fn task_input(prompt: &str) -> &str {
    let open = format!("{SENTIMENT_QUESTION}\n\n");
    match prompt.find(&open) {
        Some(at) => {
            let rest = &prompt[at + open.len()..];
            rest.find("<|im_end|>").map_or(rest, |end| &rest[..end])
        }
        None => prompt,
    }
}

/// The answer word of a label: `fresh` → positive, `rotten` → negative,
/// any other label → itself.
fn answer_word(label: &str) -> &str {
    match label {
        "fresh" => "positive",
        "rotten" => "negative",
        other => other,
    }
}

/// Scores each label by the next-token logits of its answer word's first
/// token (lower-case and capitalised, with and without a leading space;
/// log-sum-exp over the distinct ones).
#[derive(Debug, Clone)]
pub struct PromptClassifier {
    /// Label and the output-projection rows of its answer tokens.
    labels: Vec<(String, Vec<Vec<f32>>)>,
}

impl PromptClassifier {
    /// The classifier of `labels` for a decoder `model`.
    pub fn new(model: &Model, labels: &[String]) -> anyhow::Result<Self> {
        let decoder = model
            .decoder()
            .ok_or_else(|| anyhow::anyhow!("classification by prompting needs a decoder"))?;
        let labels = labels
            .iter()
            .map(|label| {
                let word = answer_word(label);
                let mut capitalised = word.to_string();
                if let Some(first) = capitalised.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                let mut ids: Vec<u32> = [
                    word.to_string(),
                    capitalised.clone(),
                    format!(" {word}"),
                    format!(" {capitalised}"),
                ]
                .iter()
                .map(|v| Ok(model.tokenizer.encode(v)?.ids.first().copied()))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
                ids.sort_unstable();
                ids.dedup();
                let ids = Tensor::new(ids.as_slice(), model.device())?;
                let rows = decoder.output_rows(&ids)?.to_vec2::<f32>()?;
                Ok((label.clone(), rows))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { labels })
    }

    /// The labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|(l, _)| l.as_str())
    }

    /// The label whose answer tokens score highest after the readout
    /// (a decoder's final-normed last hidden state).
    pub fn predict(&self, readout: &[f32]) -> &str {
        let score = |rows: &[Vec<f32>]| {
            let logits: Vec<f32> = rows
                .iter()
                .map(|r| r.iter().zip(readout).map(|(a, b)| a * b).sum())
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln()
        };
        self.labels
            .iter()
            .map(|(label, rows)| (label, score(rows)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("", |(label, _)| label.as_str())
    }
}
