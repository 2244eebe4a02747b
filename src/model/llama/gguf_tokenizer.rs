//! A `tokenizers::Tokenizer` rebuilt from the byte-level BPE vocabulary and
//! merges stored in a GGUF file's metadata (`tokenizer.ggml.*`).
//!
//! Pre-tokenization follows llama.cpp's rule for the file's
//! `tokenizer.ggml.pre`: `qwen2` splits by Qwen2's regex (contractions,
//! letters with one leading non-letter, single digits, punctuation runs,
//! newlines, spaces) before the byte-level mapping; anything else
//! (`smollm`, `gpt2`) puts every digit on its own, then GPT-2's byte-level
//! split. Control tokens (`<|im_start|>` …) become special added tokens, so
//! they are matched whole in the input. No BOS is added (neither SmolLM2 nor
//! Qwen2 is trained with one; a file whose `tokenizer.ggml.add_bos_token` is
//! true is refused until a model needs it).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::model::error::ModelError;

/// llama.cpp's token type of control tokens.
const CONTROL: i32 = 3;

/// Qwen2's pre-tokenizer regex (its `tokenizer.json`; llama.cpp's `qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer described by `metadata` (read from `path`).
pub fn tokenizer_from_gguf(
    path: &Path,
    metadata: &HashMap<String, Value>,
) -> Result<Tokenizer, ModelError> {
    let err = |detail: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        detail,
    };
    let model = metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map_or("none", |s| s.as_str());
    if model != "gpt2" {
        return Err(err(format!(
            "its tokenizer is `{model}`; only byte-level BPE (`gpt2`) tokenizers are supported"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        match metadata.get(key) {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| err(format!("{key}: {e}")))
                })
                .collect(),
            _ => Err(err(format!("the metadata has no {key} list"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| err(format!("merge {m:?} is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types: Vec<i32> = match metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(values)) => values.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(e.to_string()))?;
    if metadata
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false)
    {
        return Err(err(
            "it asks for a BOS token before every input (tokenizer.ggml.add_bos_token), which this tokenizer does not add yet".into(),
        ));
    }
    let pre = metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map_or("gpt2", |s| s.as_str());
    let steps: Vec<PreTokenizerWrapper> = match pre {
        "qwen2" => vec![
            Split::new(
                SplitPattern::Regex(QWEN2_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(e.to_string()))?
            .into(),
            ByteLevel::new(false, true, false).into(),
        ],
        _ => vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ],
    };
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == CONTROL)
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(control)
        .map_err(|e| err(e.to_string()))?;
    Ok(tokenizer)
}
