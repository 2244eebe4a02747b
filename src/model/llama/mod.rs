//! Our own Llama-family decoder forward pass (RMSNorm, RoPE, grouped-query
//! causal attention, SiLU-gated feed-forward) with a per-head attention plan
//! in every layer, read from a GGUF file or Hugging Face safetensors.

mod attention;
mod chat;
mod config;
mod decode;
mod gguf_tokenizer;
mod load;
mod prefix;
mod rope;
mod rows;
mod tensor_rows;

use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, Device, Module, Result, Tensor};
use candle_nn::Embedding;

pub use attention::LayerKv;
pub use attention::LlamaAttention;
pub use chat::ChatTemplate;
pub use config::{Family, LlamaConfig};
pub use decode::{Prefilled, argmax};
pub use load::{GgufModel, read_gguf, read_safetensors};
pub use prefix::PrefixCache;
pub use rows::{KvCache, RowPass, RowRescale, RowsOutput, Selection};
pub use tensor_rows::{DeviceKv, PromptKv};

use super::batch::Batch;
use super::bert::ForwardOutput;
use super::config::ModelShape;
use super::fused::{self, Kernels};
use super::layers::run_layers;
use super::packed::{Activation, PackedLinear};
use super::plan::{LayerPlan, Planner};
use load::DecoderTensors;
use rope::Rope;

/// One decoder layer: RMSNorm → attention → output projection + residual,
/// RMSNorm → SiLU-gated feed-forward + residual.
#[derive(Debug, Clone)]
struct DecoderLayer {
    attn_norm: Tensor,
    attn_norm_values: Vec<f32>,
    attention: LlamaAttention,
    o_weight: Tensor,
    ffn_norm: Tensor,
    ffn_norm_values: Vec<f32>,
    /// Gate and up projections stacked `[2F, D]`: one product.
    gate_up: Tensor,
    down: Tensor,
    /// The output, gate + up and down projections packed (fused kernels).
    packed: Arc<PackedFfn>,
    ffn: usize,
    eps: f32,
    kernels: Kernels,
}

/// A decoder layer's projections after attention, packed.
#[derive(Debug)]
struct PackedFfn {
    o: PackedLinear,
    gate_up: PackedLinear,
    down: PackedLinear,
}

impl PackedFfn {
    fn new(o: &Tensor, gate_up: &Tensor, down: &Tensor) -> Result<Self> {
        let pack = |w: &Tensor| PackedLinear::from_tensor(w, None, Activation::Identity);
        Ok(Self {
            o: pack(o)?,
            gate_up: pack(gate_up)?,
            down: pack(down)?,
        })
    }
}

impl DecoderLayer {
    /// The pre-attention RMSNorm of the layer input `[B, S, D]`.
    fn attention_input(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused(x)? {
            let (_, s, d) = x.dims3()?;
            let normed =
                fused::with_values(x, |v| fused::rms_norm(v, &self.attn_norm_values, self.eps))?;
            return fused::tensor(normed, &[1, s, d]);
        }
        candle_nn::ops::rms_norm(x, &self.attn_norm, self.eps)
    }

    /// Everything after attention: output projection + residual, then the
    /// feed-forward block + residual.
    fn finish(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        if self.fused(x)? {
            let (_, s, d) = x.dims3()?;
            let out = fused::with_values(x, |x| {
                fused::with_values(context, |context| {
                    let p = &self.packed;
                    let mut attended = p.o.forward(context);
                    attended.iter_mut().zip(x).for_each(|(a, x)| *a += x);
                    let normed = fused::rms_norm(&attended, &self.ffn_norm_values, self.eps);
                    let act = fused::silu_mul(&p.gate_up.forward(&normed), self.ffn);
                    let mut out = p.down.forward(&act);
                    out.iter_mut().zip(&attended).for_each(|(o, a)| *o += a);
                    out
                })
            })??;
            return fused::tensor(out, &[1, s, d]);
        }
        let x = (x + context.broadcast_matmul(&self.o_weight.t()?)?)?;
        let normed = candle_nn::ops::rms_norm(&x, &self.ffn_norm, self.eps)?;
        let gate_up = normed.broadcast_matmul(&self.gate_up.t()?)?;
        let act = (gate_up.narrow(D::Minus1, 0, self.ffn)?.silu()?
            * gate_up.narrow(D::Minus1, self.ffn, self.ffn)?)?;
        x + act.broadcast_matmul(&self.down.t()?)?
    }

    fn fused(&self, x: &Tensor) -> Result<bool> {
        Ok(self.kernels == Kernels::Fused && x.dim(0)? == 1 && x.device().is_cpu())
    }
}

/// A Llama decoder that runs under per-head plans.
#[derive(Debug, Clone)]
pub struct LlamaDecoder {
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    /// `[V, D]` (the embeddings when tied).
    lm_head: Tensor,
    config: LlamaConfig,
    shape: ModelShape,
    chat: ChatTemplate,
    device: Device,
    /// The kernels chosen ([`Self::set_kernels`]).
    kernels: Kernels,
}

impl LlamaDecoder {
    /// Builds the decoder from its tensors.
    pub fn new(
        config: LlamaConfig,
        tensors: DecoderTensors,
        chat: ChatTemplate,
        device: &Device,
    ) -> Result<Self> {
        let rope = Arc::new(Rope::new(
            config.head_dim(),
            config.rope_theta,
            config.max_positions,
            config.rope_interleaved,
            device,
        )?);
        let layers = tensors
            .layers
            .into_iter()
            .map(|t| {
                let gate_up = Tensor::cat(&[&t.gate, &t.up], 0)?;
                Ok(DecoderLayer {
                    packed: Arc::new(PackedFfn::new(&t.o, &gate_up, &t.down)?),
                    attn_norm_values: t.attn_norm.to_vec1()?,
                    attn_norm: t.attn_norm,
                    attention: LlamaAttention::new(
                        (t.q, t.k, t.v),
                        t.qkv_bias,
                        &config,
                        rope.clone(),
                    )?,
                    o_weight: t.o,
                    ffn_norm_values: t.ffn_norm.to_vec1()?,
                    ffn_norm: t.ffn_norm,
                    gate_up,
                    down: t.down,
                    ffn: config.ffn,
                    eps: config.rms_eps as f32,
                    kernels: Kernels::default_for(device),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = tensors.lm_head.unwrap_or_else(|| tensors.embed.clone());
        let shape = ModelShape {
            layers: config.layers,
            heads: config.heads,
            head_dim: config.head_dim(),
            hidden: config.hidden,
            max_positions: config.max_positions.min(rope.positions()),
        };
        Ok(Self {
            embed: Embedding::new(tensors.embed, config.hidden),
            layers,
            final_norm: tensors.final_norm,
            lm_head,
            config,
            shape,
            chat,
            kernels: Kernels::default_for(device),
            device: device.clone(),
        })
    }

    /// The decoder's sizes.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Its config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Its chat template.
    pub fn chat(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Chooses the kernels of every layer: [`Kernels::Reference`] (candle
    /// ops) or [`Kernels::Fused`] (the default on the CPU). Row-wise passes
    /// follow: host caches and the fused pass, or device caches and the
    /// tensor pass ([`Self::prompt_kv`]).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
        for layer in &mut self.layers {
            layer.kernels = kernels;
            layer.attention.set_kernels(kernels);
        }
    }

    /// Runs layer `layer`'s RMSNorm and attention alone on its input `x`
    /// (`[B, S, D]`) under `plan`, for inspecting one layer in isolation.
    pub fn layer_attention(
        &self,
        layer: usize,
        x: &Tensor,
        plan: &LayerPlan,
    ) -> Result<super::AttentionOutput> {
        let layer = self
            .layers
            .get(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("no layer {layer}")))?;
        layer
            .attention
            .forward(&layer.attention_input(x)?, None, plan)
    }

    /// Runs the decoder on `batch` (right-padded), asking `planner` for each
    /// layer's plan (it sees the layer's input residual stream) right before
    /// that layer's attention. Returns the last residual stream `[B, S, D]`
    /// (before the final norm).
    pub fn forward(&self, batch: &Batch, planner: &mut dyn Planner) -> Result<ForwardOutput> {
        let start = Instant::now();
        let x = self.embed.forward(&batch.input_ids)?;
        self.device.synchronize()?;
        run_layers(
            &self.device,
            (x, start.elapsed()),
            self.layers.len(),
            planner,
            |i, x, plan| {
                let layer = &self.layers[i];
                layer
                    .attention
                    .forward(&layer.attention_input(x)?, batch.mask.as_ref(), plan)
            },
            |i, x, context| self.layers[i].finish(x, context),
        )
    }

    /// The final-normed hidden state of each input's last real token, `[B, D]`:
    /// what the next-token logits are computed from.
    pub fn last_hidden(&self, hidden: &Tensor, batch: &Batch) -> Result<Tensor> {
        let rows = batch
            .lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| hidden.get(b)?.get(len - 1))
            .collect::<Result<Vec<_>>>()?;
        candle_nn::ops::rms_norm(
            &Tensor::stack(&rows, 0)?,
            &self.final_norm,
            self.config.rms_eps as f32,
        )
    }

    /// The output-projection rows of token `ids` (`[N, D]`): a token's
    /// logit is its row · the readout.
    pub fn output_rows(&self, ids: &Tensor) -> Result<Tensor> {
        self.lm_head.index_select(ids, 0)
    }

    /// The final-normed hidden state of the last row of `hidden` (`[1, n, D]`),
    /// `[1, D]`: the readout of a pass after a cached prefix.
    pub fn last_row(&self, hidden: &Tensor) -> Result<Tensor> {
        let n = hidden.dim(1)?;
        candle_nn::ops::rms_norm(
            &hidden.get(0)?.narrow(0, n - 1, 1)?,
            &self.final_norm,
            self.config.rms_eps as f32,
        )
    }

    /// Next-token logits `[B, V]` from [`Self::last_hidden`]'s output.
    pub fn logits(&self, last_hidden: &Tensor) -> Result<Tensor> {
        last_hidden.matmul(&self.lm_head.t()?)
    }
}
