//! Our own BERT encoder forward pass on candle ops, with a per-head attention
//! plan in every layer and per-layer timers.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::attention::SelfAttention;
use super::batch::Batch;
use super::config::{BertConfig, ModelShape};
use super::fused::{self, Kernels};
use super::layers::run_layers;
use super::packed::{Activation, PackedLinear};
use super::plan::Planner;
use super::simd;
use super::timing::ForwardTimings;

/// Token, position and token-type embeddings followed by a layer norm.
#[derive(Debug, Clone)]
struct Embeddings {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    /// The norm's scale and shift as host vectors, for the fused kernels.
    norm_values: (Vec<f32>, Vec<f32>),
    eps: f32,
    kernels: Kernels,
}

impl Embeddings {
    fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let d = config.hidden_size;
        let norm = candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("LayerNorm"))?;
        Ok(Self {
            norm_values: norm_values(&norm)?,
            norm,
            eps: config.layer_norm_eps as f32,
            kernels: Kernels::default_for(vb.device()),
            words: candle_nn::embedding(config.vocab_size, d, vb.pp("word_embeddings"))?,
            positions: candle_nn::embedding(
                config.max_position_embeddings,
                d,
                vb.pp("position_embeddings"),
            )?,
            token_types: candle_nn::embedding(
                config.type_vocab_size,
                d,
                vb.pp("token_type_embeddings"),
            )?,
        })
    }

    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        if self.kernels == Kernels::Fused && b == 1 && batch.input_ids.device().is_cpu() {
            return self.forward_fused(batch, s);
        }
        let positions = Tensor::arange(0u32, s as u32, batch.input_ids.device())?;
        let x = self
            .words
            .forward(&batch.input_ids)?
            .add(&self.token_types.forward(&batch.type_ids)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        self.norm.forward(&x)
    }

    /// [`Self::forward`] for one input on the fused kernels: the three rows
    /// of each token summed and normalised in one pass.
    fn forward_fused(&self, batch: &Batch, s: usize) -> Result<Tensor> {
        let ids = batch.input_ids.flatten_all()?.to_vec1::<u32>()?;
        let types = batch.type_ids.flatten_all()?.to_vec1::<u32>()?;
        let d = self.norm_values.0.len();
        let mut out = vec![0f32; s * d];
        fused::with_values(self.words.embeddings(), |words| {
            fused::with_values(self.token_types.embeddings(), |token_types| {
                fused::with_values(self.positions.embeddings(), |positions| {
                    let mut others = vec![0f32; d];
                    for (i, dst) in out.chunks_mut(d).enumerate() {
                        let t = embedding_row(token_types, types[i], d)?;
                        let p = embedding_row(positions, i as u32, d)?;
                        others
                            .iter_mut()
                            .zip(t.iter().zip(p))
                            .for_each(|(o, (t, p))| *o = t + p);
                        let norm = (&self.norm_values.0[..], &self.norm_values.1[..]);
                        simd::add_layer_norm(
                            dst,
                            embedding_row(words, ids[i], d)?,
                            &others,
                            norm,
                            self.eps,
                        );
                    }
                    Ok::<(), candle_core::Error>(())
                })
            })
        })????;
        fused::tensor(out, &[1, s, d])
    }
}

/// Row `i` of an embedding table `d` wide.
fn embedding_row(table: &[f32], i: u32, d: usize) -> Result<&[f32]> {
    let start = i as usize * d;
    table
        .get(start..start + d)
        .ok_or_else(|| candle_core::Error::Msg(format!("id {i} is outside the embeddings")))
}

/// One encoder layer: self-attention, output projection + residual + norm,
/// feed-forward + residual + norm.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    attention: SelfAttention,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    /// Packed projections and norm parameters, for the fused kernels.
    host: HostParams,
    eps: f32,
    kernels: Kernels,
}

/// Per-layer parameters of the fused kernels: packed projections (bias and
/// GELU applied as they are stored) and norm parameters as slices.
#[derive(Debug, Clone)]
struct HostParams {
    attention_out: Arc<PackedLinear>,
    attention_norm: (Vec<f32>, Vec<f32>),
    intermediate: Arc<PackedLinear>,
    output: Arc<PackedLinear>,
    output_norm: (Vec<f32>, Vec<f32>),
}

/// A linear layer packed for the fused kernels, with `activation` applied.
fn packed(linear: &Linear, activation: Activation) -> Result<Arc<PackedLinear>> {
    let layer = PackedLinear::from_tensor(linear.weight(), linear.bias(), activation)?;
    Ok(Arc::new(layer))
}

/// A layer norm's scale and shift as host vectors.
fn norm_values(norm: &LayerNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let beta = match norm.bias() {
        Some(b) => b.to_vec1()?,
        None => vec![0.0; norm.weight().dim(0)?],
    };
    Ok((norm.weight().to_vec1()?, beta))
}

impl EncoderLayer {
    fn load(vb: VarBuilder, config: &BertConfig, shape: &ModelShape) -> Result<Self> {
        let (d, ffn, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let attention_out = candle_nn::linear(d, d, vb.pp("attention.output.dense"))?;
        let attention_norm = candle_nn::layer_norm(d, eps, vb.pp("attention.output.LayerNorm"))?;
        let intermediate = candle_nn::linear(d, ffn, vb.pp("intermediate.dense"))?;
        let output = candle_nn::linear(ffn, d, vb.pp("output.dense"))?;
        let output_norm = candle_nn::layer_norm(d, eps, vb.pp("output.LayerNorm"))?;
        let host = HostParams {
            attention_out: packed(&attention_out, Activation::Identity)?,
            attention_norm: norm_values(&attention_norm)?,
            intermediate: packed(&intermediate, Activation::GeluErf)?,
            output: packed(&output, Activation::Identity)?,
            output_norm: norm_values(&output_norm)?,
        };
        Ok(Self {
            attention: SelfAttention::load(vb.pp("attention.self"), shape)?,
            attention_out,
            attention_norm,
            intermediate,
            output,
            output_norm,
            host,
            eps: eps as f32,
            kernels: Kernels::default_for(vb.device()),
        })
    }

    /// Chooses the kernels of this layer (the fused ones run on the CPU only).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
        self.attention.set_kernels(kernels);
    }

    /// The layer's self-attention (for inspecting one layer in isolation).
    pub fn attention(&self) -> &SelfAttention {
        &self.attention
    }

    /// Everything after attention: `[B, S, D]` context → layer output.
    fn finish(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        if self.kernels == Kernels::Fused && b == 1 && x.device().is_cpu() {
            return self.finish_fused(x, context, s, d);
        }
        let attended = self
            .attention_norm
            .forward(&(self.attention_out.forward(context)? + x)?)?;
        let hidden = self.intermediate.forward(&attended)?.gelu_erf()?;
        self.output_norm
            .forward(&(self.output.forward(&hidden)? + attended)?)
    }

    /// [`Self::finish`] on the fused kernels: packed projections (bias and
    /// GELU applied as they are stored), residual + layer norm in one pass.
    fn finish_fused(&self, x: &Tensor, context: &Tensor, s: usize, d: usize) -> Result<Tensor> {
        let h = &self.host;
        let out = fused::with_values(x, |x| {
            fused::with_values(context, |context| {
                let projected = h.attention_out.forward(context);
                let attended = fused::add_layer_norm(
                    &projected,
                    x,
                    (&h.attention_norm.0, &h.attention_norm.1),
                    self.eps,
                );
                let hidden = h.intermediate.forward(&attended);
                let out = h.output.forward(&hidden);
                fused::add_layer_norm(
                    &out,
                    &attended,
                    (&h.output_norm.0, &h.output_norm.1),
                    self.eps,
                )
            })
        })??;
        fused::tensor(out, &[1, s, d])
    }
}

/// What a forward pass produced.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// Last hidden state `[B, S, D]`.
    pub hidden: Tensor,
    /// Captured post-softmax maps `[B, S, S]`, by layer then head (`None` where
    /// the plan did not capture).
    pub maps: Vec<Vec<Option<Tensor>>>,
    /// Wall-clock timers.
    pub timings: ForwardTimings,
}

/// A BERT encoder (embeddings + layers) that runs under per-head plans.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    shape: ModelShape,
    pad_token_id: u32,
    device: Device,
}

impl BertEncoder {
    /// Loads the encoder from a var builder rooted at the model (a `bert.`
    /// prefix, as in checkpoints with heads, is detected).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let shape = ModelShape::of(config);
        let layers = (0..shape.layers)
            .map(|i| EncoderLayer::load(vb.pp(format!("encoder.layer.{i}")), config, &shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(vb.pp("embeddings"), config)?,
            layers,
            shape,
            pad_token_id: config.pad_token_id as u32,
            device: vb.device().clone(),
        })
    }

    /// The encoder's sizes.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[EncoderLayer] {
        &self.layers
    }

    /// Chooses the kernels of every layer: [`Kernels::Reference`] (candle
    /// ops) or [`Kernels::Fused`] (the default on the CPU).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.embeddings.kernels = kernels;
        self.layers.iter_mut().for_each(|l| l.set_kernels(kernels));
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The token id used for padding.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// Runs the encoder on `batch`, asking `planner` for each layer's plan
    /// right before that layer's attention (see `run_layers`).
    pub fn forward(&self, batch: &Batch, planner: &mut dyn Planner) -> Result<ForwardOutput> {
        let start = Instant::now();
        let x = self.embeddings.forward(batch)?;
        self.device.synchronize()?;
        run_layers(
            &self.device,
            (x, start.elapsed()),
            self.layers.len(),
            planner,
            |i, x, plan| {
                self.layers[i]
                    .attention
                    .forward(x, batch.mask.as_ref(), plan)
            },
            |i, x, context| self.layers[i].finish(x, context),
        )
    }

    /// Mean of the last hidden state over each input's real tokens, L2
    /// normalised: the sentence embedding, `[B, D]`.
    pub fn sentence_embeddings(&self, hidden: &Tensor, batch: &Batch) -> Result<Tensor> {
        let pooled = match &batch.token_mask {
            None => hidden.mean(1)?,
            Some(token_mask) => {
                let summed = hidden.broadcast_mul(&token_mask.unsqueeze(2)?)?.sum(1)?;
                summed.broadcast_div(&token_mask.sum_keepdim(1)?)?
            }
        };
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        pooled.broadcast_div(&norm.maximum(1e-12)?)
    }
}
