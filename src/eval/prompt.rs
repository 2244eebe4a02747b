//! Classification by prompting, for decoders: each text is asked as a chat
//! question about its sentiment (our template), and the label whose answer
//! word gets the larger next-token logit wins. Prefill only, like the
//! paper's MMLU setup.

use anyhow::Context;
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
    few_shot_prompt(model, text, &[])
}

/// `text` as the sentiment question after `examples` (review, label), the
/// same block in every prompt as the paper's MMLU prompts share theirs; no
/// examples is [`sentiment_prompt`].
pub fn few_shot_prompt(
    model: &Model,
    text: &str,
    examples: &[(String, String)],
) -> anyhow::Result<String> {
    let block: String = examples
        .iter()
        .map(|(review, label)| format!("{review}\nAnswer: {}\n\n", answer_word(label)))
        .collect();
    model.chat_prompt(&format!("{SENTIMENT_QUESTION}\n\n{block}{text}"))
}

/// The first `k` labelled reviews of `pool`, alternating between its
/// labels in the order they first appear (balanced shots).
pub fn pick_shots(pool: &Corpus, k: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut labels: Vec<&str> = Vec::new();
    for label in pool.items.iter().filter_map(|i| i.label.as_deref()) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    anyhow::ensure!(
        k == 0 || !labels.is_empty(),
        "{} has no labelled texts to take {k} examples from",
        pool.name
    );
    let mut used = vec![false; pool.items.len()];
    let mut shots = Vec::with_capacity(k);
    for i in 0..k {
        let want = labels[i % labels.len()];
        let at = pool
            .items
            .iter()
            .enumerate()
            .position(|(j, item)| !used[j] && item.label.as_deref() == Some(want))
            .with_context(|| {
                format!("{} has too few `{want}` texts for {k} examples", pool.name)
            })?;
        used[at] = true;
        shots.push((pool.items[at].text.clone(), want.to_string()));
    }
    Ok(shots)
}

/// Every text of `corpus` as a `examples`-shot sentiment prompt (a decoder
/// only: the chat template refuses an encoder).
pub fn few_shot_corpus(
    model: &Model,
    mut corpus: Corpus,
    examples: &[(String, String)],
) -> anyhow::Result<Corpus> {
    for item in &mut corpus.items {
        item.text = few_shot_prompt(model, &item.text, examples)?;
    }
    corpus.name = format!("{} ({}-shot)", corpus.name, examples.len());
    Ok(corpus)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Item;

    fn pool(labels: &[&str]) -> Corpus {
        Corpus {
            name: "pool".into(),
            items: labels
                .iter()
                .enumerate()
                .map(|(i, l)| Item {
                    text: format!("review {i}"),
                    label: Some(l.to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn shots_alternate_labels_in_pool_order() {
        let p = pool(&["fresh", "fresh", "fresh", "rotten", "rotten"]);
        let shots = pick_shots(&p, 4).unwrap();
        let got: Vec<(&str, &str)> = shots
            .iter()
            .map(|(t, l)| (t.as_str(), l.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("review 0", "fresh"),
                ("review 3", "rotten"),
                ("review 1", "fresh"),
                ("review 4", "rotten")
            ]
        );
        assert!(pick_shots(&p, 0).unwrap().is_empty());
        let err = pick_shots(&p, 6).unwrap_err().to_string();
        assert!(err.contains("too few `rotten` texts"), "{err}");
        let unlabelled = Corpus {
            name: "plain".into(),
            items: vec![Item {
                text: "x".into(),
                label: None,
            }],
        };
        assert!(pick_shots(&unlabelled, 1).is_err());
    }
}
