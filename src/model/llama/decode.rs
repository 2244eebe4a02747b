//! Greedy decoding and teacher-forced scoring after any prefill: the same
//! loop whichever way the prompt's keys and values were made (exact, prefix
//! cache, modules), each step one row-wise pass of one new row.

use candle_core::{Result, Tensor};

use super::LlamaDecoder;
use super::rows::{RowPass, RowsOutput};
use super::tensor_rows::PromptKv;
use crate::model::next_token;

/// A prefilled prompt ready to be continued: its cache and every row's id
/// and position.
#[derive(Debug, Clone)]
pub struct Prefilled {
    /// Keys and values of every row.
    pub kv: PromptKv,
    /// Token id of every row.
    pub ids: Vec<u32>,
    /// Position of every row.
    pub positions: Vec<usize>,
    /// Next-token logits after the last row, `[V]`.
    pub logits: Vec<f32>,
}

impl Prefilled {
    /// How many leading tokens of `ids` this prompt's cache can serve: their
    /// longest common prefix, leaving at least one token to compute.
    pub fn shared_len(&self, ids: &[u32]) -> usize {
        servable_prefix(&self.ids, ids)
    }

    /// Runs `f` on this prompt, then drops whatever `f` appended, so the
    /// prompt is as it was (rows, cache, logits) whether `f` succeeded or not
    /// — a continuation is scored or generated without copying the cache.
    fn scratch<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let (rows, logits) = (self.ids.len(), self.logits.clone());
        let out = f(self);
        self.ids.truncate(rows);
        self.positions.truncate(rows);
        self.logits = logits;
        self.kv.resize(rows)?;
        out
    }
}

impl LlamaDecoder {
    /// Next-token logits of every row `rows` of a pass's output that was
    /// computed to the end, `[len, V]`.
    pub fn logits_of_rows(&self, out: &RowsOutput, rows: &[usize]) -> Result<Tensor> {
        let idx = rows
            .iter()
            .map(|r| {
                out.rows.binary_search(r).map(|i| i as u32).map_err(|_| {
                    candle_core::Error::Msg(format!("row {r} was not computed to the end"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let hidden = out
            .hidden
            .squeeze(0)?
            .index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?;
        let normed =
            candle_nn::ops::rms_norm(&hidden, &self.final_norm, self.config.rms_eps as f32)?;
        self.logits(&normed)
    }

    /// Appends `tokens` to a prefilled prompt in one pass (positions after
    /// its last), returning the logits after each appended token `[k, V]`.
    pub fn append(&self, state: &mut Prefilled, tokens: &[u32]) -> Result<Tensor> {
        let start = state.ids.len();
        let next = state.positions.last().map_or(0, |p| p + 1);
        state.ids.extend_from_slice(tokens);
        state.positions.extend((0..tokens.len()).map(|i| next + i));
        state.kv.resize(state.ids.len())?;
        let computed: Vec<usize> = (start..state.ids.len()).collect();
        let out = self.forward_rows(
            RowPass {
                ids: &state.ids,
                positions: &state.positions,
                computed: &computed,
                select: None,
                capture: &[],
            },
            &mut state.kv,
        )?;
        let logits = self.logits_of_rows(&out, &computed)?;
        state.logits = logits.get(tokens.len() - 1)?.to_vec1()?;
        Ok(logits)
    }

    /// Greedy continuation of up to `n` tokens, stopping after `stop` when
    /// given; the prompt is left as it was.
    pub fn greedy(&self, state: &mut Prefilled, n: usize, stop: Option<u32>) -> Result<Vec<u32>> {
        state.scratch(|state| {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let token = argmax(&state.logits);
                out.push(token);
                if Some(token) == stop || out.len() == n {
                    break;
                }
                self.append(state, &[token])?;
            }
            Ok(out)
        })
    }

    /// Teacher-forced negative log-likelihood (nats, summed) of `tokens`
    /// after a prefilled prompt: the first from its logits, each later one
    /// from the logits after the tokens before it; the prompt is left as it
    /// was.
    pub fn continuation_nll(&self, state: &mut Prefilled, tokens: &[u32]) -> Result<f64> {
        let Some((first, _)) = tokens.split_first() else {
            return Ok(0.0);
        };
        let mut nll = -log_prob(&state.logits, *first);
        if tokens.len() > 1 {
            let logits = state.scratch(|state| self.append(state, &tokens[..tokens.len() - 1]))?;
            for (i, &t) in tokens[1..].iter().enumerate() {
                nll -= log_prob(&logits.get(i)?.to_vec1()?, t);
            }
        }
        Ok(nll)
    }
}

/// How many leading tokens of `ids` a cache of `cached` can serve: their
/// longest common prefix, leaving at least one token to compute.
pub(super) fn servable_prefix(cached: &[u32], ids: &[u32]) -> usize {
    let common = cached.iter().zip(ids).take_while(|(a, b)| a == b).count();
    common.min(ids.len().saturating_sub(1))
}

/// The most likely token.
pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// log p(token) under the softmax of `logits`.
fn log_prob(logits: &[f32], token: u32) -> f64 {
    let p = next_token::softmax(logits);
    (p[token as usize] as f64).max(1e-30).ln()
}
