//! Tokenizing text with a Hugging Face `tokenizer.json`, without padding or
//! truncation surprises.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use super::error::ModelError;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids.
    pub type_ids: Vec<u32>,
    /// Token strings, for display.
    pub tokens: Vec<String>,
    /// True when the text was cut to the model's maximum length (or to the
    /// padded length).
    pub truncated: bool,
    /// Pad tokens at the end of `ids` (0 unless the tokenizer pads every
    /// input to one length, see [`TextTokenizer::pad_to`]).
    pub padding: usize,
}

impl TokenizedText {
    /// Number of real tokens (`ids` without the trailing padding).
    pub fn real_len(&self) -> usize {
        self.ids.len() - self.padding
    }
}

/// The one-line note for a text cut to the model's maximum of `max`
/// tokens (stderr, the dashboard's status line).
pub fn truncation_note(max: usize) -> String {
    format!(
        "the text is longer than the model's maximum of {max} tokens: only its first {max} were run"
    )
}

/// A tokenizer that never pads and truncates only at the model's maximum
/// length (reporting when it does).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Byte-level BPE: token strings are shown decoded (`Ġgood` → ` good`,
    /// a newline as `⏎`).
    byte_level: bool,
    /// The model's maximum input length.
    max_len: usize,
    /// Every input cut and padded to this length with this pad id (the
    /// AttnCache paper's setting); `None`: no padding.
    pad: Option<Padding>,
}

/// Fixed-length padding of every input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Padding {
    length: usize,
    id: u32,
    token: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, turning its padding off and its truncation to
    /// `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, ModelError> {
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Self::from_tokenizer(path, inner, max_len)
    }

    /// Wraps a tokenizer built elsewhere (loaded from `path`), turning its
    /// padding off and its truncation to `max_len` tokens.
    pub fn from_tokenizer(
        path: &Path,
        mut inner: Tokenizer,
        max_len: usize,
    ) -> Result<Self, ModelError> {
        let err = |detail: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            detail,
        };
        inner.with_padding(None);
        let byte_level = matches!(
            inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            inner,
            byte_level,
            max_len,
            pad: None,
        })
    }

    /// The text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("cannot decode token ids {ids:?}: {e}"))
    }

    /// A byte-level token as text for display (newlines as `⏎`).
    fn display_token(&self, id: u32) -> anyhow::Result<String> {
        Ok(self.decode(&[id])?.replace('\n', "⏎"))
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// From now on cuts every input to `length` tokens (special tokens
    /// kept) and pads shorter ones to it with `pad_id`, as the AttnCache
    /// paper's reference code does, so every input has one length. The model
    /// masks the padding out of attention and pooling.
    pub fn pad_to(&mut self, length: usize, pad_id: u32) -> anyhow::Result<()> {
        anyhow::ensure!(
            length >= 2,
            "cannot pad inputs to {length} tokens: use at least 2"
        );
        anyhow::ensure!(
            length <= self.max_len,
            "cannot pad inputs to {length} tokens: the model takes at most {}",
            self.max_len
        );
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: length,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("cannot set the tokenizer's truncation: {e}"))?;
        self.pad = Some(Padding {
            length,
            id: pad_id,
            token: self.display_token(pad_id)?,
        });
        Ok(())
    }

    /// The length every input is padded to, if any.
    pub fn padded_to(&self) -> Option<usize> {
        self.pad.as_ref().map(|p| p.length)
    }

    /// Tokenizes one text (special tokens added; cut and padded when the
    /// tokenizer pads).
    pub fn encode(&self, text: &str) -> anyhow::Result<TokenizedText> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?;
        let mut tokenized = TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            tokens: if self.byte_level {
                encoding
                    .get_ids()
                    .iter()
                    .map(|&id| self.display_token(id))
                    .collect::<anyhow::Result<_>>()?
            } else {
                encoding.get_tokens().to_vec()
            },
            truncated: !encoding.get_overflowing().is_empty(),
            padding: 0,
        };
        if let Some(pad) = &self.pad {
            let padding = pad.length.saturating_sub(tokenized.ids.len());
            tokenized.ids.extend(std::iter::repeat_n(pad.id, padding));
            tokenized.type_ids.extend(std::iter::repeat_n(0, padding));
            tokenized
                .tokens
                .extend(std::iter::repeat_n(pad.token.clone(), padding));
            tokenized.padding = padding;
        }
        Ok(tokenized)
    }
}
