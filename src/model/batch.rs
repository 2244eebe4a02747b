//! A batch of tokenized texts as tensors, padded to the longest with masks.

use candle_core::{Device, Result, Tensor};

use super::tokenizer::TokenizedText;

/// Inputs of one forward pass.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[B, S]` (u32), padded with the pad id.
    pub input_ids: Tensor,
    /// Token type ids `[B, S]` (u32).
    pub type_ids: Tensor,
    /// Additive key mask `[B, 1, 1, S]` (0 for real tokens, −∞ for padding);
    /// `None` when nothing is padded, so the exact path skips masking.
    pub mask: Option<Tensor>,
    /// 1/0 token mask `[B, S]` (f32) for pooling; `None` when nothing is padded.
    pub token_mask: Option<Tensor>,
    /// Real length of each input (padding excluded).
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Builds a batch from tokenized texts; `pad_id` fills the padding (an
    /// input the tokenizer already padded keeps its pads, masked alike).
    pub fn new(texts: &[TokenizedText], pad_id: u32, device: &Device) -> Result<Self> {
        if texts.is_empty() {
            candle_core::bail!("a batch needs at least one text");
        }
        let lengths: Vec<usize> = texts.iter().map(TokenizedText::real_len).collect();
        let s = texts.iter().map(|t| t.ids.len()).max().expect("non-empty");
        let b = texts.len();
        let padded = |pick: fn(&TokenizedText) -> &Vec<u32>, fill: u32| -> Vec<u32> {
            texts
                .iter()
                .flat_map(|t| {
                    let v = pick(t);
                    v.iter()
                        .copied()
                        .chain(std::iter::repeat_n(fill, s - v.len()))
                })
                .collect()
        };
        let input_ids = Tensor::from_vec(padded(|t| &t.ids, pad_id), (b, s), device)?;
        let type_ids = Tensor::from_vec(padded(|t| &t.type_ids, 0), (b, s), device)?;
        let (mask, token_mask) = if lengths.iter().all(|&l| l == s) {
            (None, None)
        } else {
            let keep: Vec<f32> = lengths
                .iter()
                .flat_map(|&l| (0..s).map(move |j| if j < l { 1.0 } else { 0.0 }))
                .collect();
            let additive: Vec<f32> = keep
                .iter()
                .map(|&k| if k > 0.0 { 0.0 } else { f32::NEG_INFINITY })
                .collect();
            (
                Some(Tensor::from_vec(additive, (b, 1, 1, s), device)?),
                Some(Tensor::from_vec(keep, (b, s), device)?),
            )
        };
        Ok(Self {
            input_ids,
            type_ids,
            mask,
            token_mask,
            lengths,
        })
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// True for a batch without inputs (never built by [`Batch::new`]).
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}
