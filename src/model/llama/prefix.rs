//! Prefix caching: the keys, values and layer inputs of a token prefix,
//! computed once; an input that starts with those tokens runs only its own
//! tokens, attending to the cached keys. This skips *all* of the prefix's
//! work (projections, attention, feed-forward), which is what any serving
//! stack does for a shared prompt template — the baseline attention-map
//! reuse has to beat.

use std::time::Instant;

use candle_core::{Module, Result, Tensor};

use super::LlamaDecoder;
use super::attention::LayerKv;
use super::decode::servable_prefix;
use crate::model::bert::ForwardOutput;
use crate::model::layers::run_layers;
use crate::model::plan::{LayerPlan, Planner};

/// One layer's share of a prefix cache.
#[derive(Debug, Clone)]
struct PrefixLayer {
    /// The layer's input rows `[P, D]` (what a planner's features read).
    input: Tensor,
    /// Keys (after RoPE) and values.
    kv: LayerKv,
}

/// Keys, values and layer inputs of a token prefix, for every layer.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    ids: Vec<u32>,
    layers: Vec<PrefixLayer>,
}

impl PrefixCache {
    /// The prefix's token ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// How many leading tokens of `ids` the cache serves: their longest
    /// common prefix, leaving at least one token to compute.
    pub fn shared_len(&self, ids: &[u32]) -> usize {
        servable_prefix(&self.ids, ids)
    }
}

impl LlamaDecoder {
    /// Runs `ids` exactly once and keeps every layer's keys, values and input.
    pub fn prefix_cache(&self, ids: &[u32]) -> Result<PrefixCache> {
        if ids.is_empty() {
            candle_core::bail!("a prefix cache needs at least one token");
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.forward(&input)?;
        let plan = LayerPlan::exact(self.config.heads);
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let normed = layer.attention_input(&x)?;
            let (out, kv) = layer
                .attention
                .forward_after_prefix(&normed, &plan, None, true)?;
            layers.push(PrefixLayer {
                input: x.squeeze(0)?,
                kv: kv.expect("asked for keys and values"),
            });
            x = layer.finish(&x, &out.context)?;
        }
        Ok(PrefixCache {
            ids: ids.to_vec(),
            layers,
        })
    }

    /// Runs `ids` after the part of `prefix` it shares (see
    /// [`PrefixCache::shared_len`]): only the remaining tokens are computed.
    /// The planner sees each layer's full input (cached rows + new rows)
    /// when it reads inputs, and its reused maps may be full `[S, S]` maps
    /// (their rows for the new tokens are used). Returns the hidden state
    /// and captured maps of the new rows (`[1, n, D]`, `[1, n, S]`) and the
    /// number of prefix tokens served.
    pub fn forward_after_prefix(
        &self,
        ids: &[u32],
        prefix: &PrefixCache,
        planner: &mut dyn Planner,
    ) -> Result<(ForwardOutput, usize)> {
        let p = prefix.shared_len(ids);
        let start = Instant::now();
        let input = Tensor::new(&ids[p..], &self.device)?.unsqueeze(0)?;
        let x = self.embed.forward(&input)?;
        self.device.synchronize()?;
        let mut planner = AfterPrefix {
            inner: planner,
            prefix,
            used: p,
        };
        let out = run_layers(
            &self.device,
            (x, start.elapsed()),
            self.layers.len(),
            &mut planner,
            |i, x, plan| {
                let layer = &self.layers[i];
                let kv = (&prefix.layers[i].kv, p);
                let normed = layer.attention_input(x)?;
                Ok(layer
                    .attention
                    .forward_after_prefix(&normed, plan, Some(kv), false)?
                    .0)
            },
            |i, x, context| self.layers[i].finish(x, context),
        )?;
        Ok((out, p))
    }
}

/// A planner seen through a prefix cache: it reads each layer's full input,
/// the cached prefix rows followed by the new rows.
struct AfterPrefix<'a> {
    inner: &'a mut dyn Planner,
    prefix: &'a PrefixCache,
    used: usize,
}

impl Planner for AfterPrefix<'_> {
    fn reads_input(&self) -> bool {
        self.inner.reads_input()
    }

    fn plan_layer(&mut self, layer: usize, input: &Tensor) -> Result<LayerPlan> {
        if !self.inner.reads_input() {
            return self.inner.plan_layer(layer, input);
        }
        let cached = self.prefix.layers[layer].input.narrow(0, 0, self.used)?;
        let full = Tensor::cat(&[&cached, &input.squeeze(0)?], 0)?;
        self.inner.plan_layer(layer, &full.unsqueeze(0)?)
    }
}
