//! Reading a decoder's tensors: from a GGUF file (dequantized to f32 once at
//! load) or from Hugging Face safetensors.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use super::config::LlamaConfig;
use super::gguf_tokenizer::tokenizer_from_gguf;
use crate::model::error::ModelError;

/// One layer's tensors, PyTorch layout (`[out, in]`), f32: the two RMSNorm
/// weights, the attention projections (with Qwen2's Q, K, V biases) and the
/// feed-forward matrices.
#[derive(Debug)]
#[allow(missing_docs)] // named as in the Llama paper
pub struct LayerTensors {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    /// Q, K, V biases (Qwen2), `None` for Llama.
    pub qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// Every tensor of a decoder, f32 on the target device.
#[derive(Debug)]
pub struct DecoderTensors {
    /// Token embeddings `[V, D]`.
    pub embed: Tensor,
    /// Final RMSNorm weight.
    pub final_norm: Tensor,
    /// Output projection `[V, D]`; `None` when tied to the embeddings.
    pub lm_head: Option<Tensor>,
    /// Per layer.
    pub layers: Vec<LayerTensors>,
}

/// What a GGUF file holds.
pub struct GgufModel {
    /// Sizes from the metadata.
    pub config: LlamaConfig,
    /// The tokenizer rebuilt from the metadata.
    pub tokenizer: Tokenizer,
    /// The chat template's default system message.
    pub chat: ChatTemplate,
    /// Every tensor, dequantized.
    pub tensors: DecoderTensors,
}

/// Reads a llama or qwen2 GGUF file: config from its metadata, tokenizer
/// from its vocabulary, tensors dequantized to f32.
pub fn read_gguf(path: &Path, device: &Device) -> std::result::Result<GgufModel, ModelError> {
    let gguf_err = |detail: String| ModelError::Gguf {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| gguf_err(e.to_string()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| gguf_err(first_line(&e)))?;
    let config = LlamaConfig::from_gguf(path, &content.metadata)?;
    let tokenizer = tokenizer_from_gguf(path, &content.metadata)?;
    let has_bias = config.family.qkv_bias();
    let chat = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .map(|t| ChatTemplate::from_jinja(t))
        .unwrap_or_default();
    let mut get = |name: &str| -> std::result::Result<Tensor, ModelError> {
        content
            .tensor(&mut file, name, device)
            .and_then(|q| q.dequantize(device))
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| gguf_err(format!("tensor {name}: {}", first_line(&e))))
    };
    let mut layers = Vec::with_capacity(config.layers);
    for l in 0..config.layers {
        let mut t = |name: &str, kind: &str| get(&format!("blk.{l}.{name}.{kind}"));
        let qkv_bias = match has_bias {
            true => Some((
                t("attn_q", "bias")?,
                t("attn_k", "bias")?,
                t("attn_v", "bias")?,
            )),
            false => None,
        };
        let mut t = |name: &str| t(name, "weight");
        layers.push(LayerTensors {
            attn_norm: t("attn_norm")?,
            q: t("attn_q")?,
            k: t("attn_k")?,
            v: t("attn_v")?,
            qkv_bias,
            o: t("attn_output")?,
            ffn_norm: t("ffn_norm")?,
            gate: t("ffn_gate")?,
            up: t("ffn_up")?,
            down: t("ffn_down")?,
        });
    }
    let lm_head = if content.tensor_infos.contains_key("output.weight") {
        Some(get("output.weight")?)
    } else {
        None
    };
    let tensors = DecoderTensors {
        embed: get("token_embd.weight")?,
        final_norm: get("output_norm.weight")?,
        lm_head,
        layers,
    };
    Ok(GgufModel {
        config,
        tokenizer,
        chat,
        tensors,
    })
}

/// Reads Hugging Face Llama or Qwen2 safetensors (`model.` prefix,
/// `lm_head` unless the embeddings are tied).
pub fn read_safetensors(vb: VarBuilder, config: &LlamaConfig) -> Result<DecoderTensors> {
    let (d, f, v) = (config.hidden, config.ffn, config.vocab);
    let (hd, kv) = (config.head_dim(), config.kv_heads * config.head_dim());
    let m = vb.pp("model");
    let layers = (0..config.layers)
        .map(|l| {
            let p = m.pp(format!("layers.{l}"));
            let qkv_bias = match config.family.qkv_bias() {
                true => Some((
                    p.get(config.heads * hd, "self_attn.q_proj.bias")?,
                    p.get(kv, "self_attn.k_proj.bias")?,
                    p.get(kv, "self_attn.v_proj.bias")?,
                )),
                false => None,
            };
            Ok(LayerTensors {
                attn_norm: p.get(d, "input_layernorm.weight")?,
                q: p.get((config.heads * hd, d), "self_attn.q_proj.weight")?,
                k: p.get((kv, d), "self_attn.k_proj.weight")?,
                v: p.get((kv, d), "self_attn.v_proj.weight")?,
                qkv_bias,
                o: p.get((d, config.heads * hd), "self_attn.o_proj.weight")?,
                ffn_norm: p.get(d, "post_attention_layernorm.weight")?,
                gate: p.get((f, d), "mlp.gate_proj.weight")?,
                up: p.get((f, d), "mlp.up_proj.weight")?,
                down: p.get((d, f), "mlp.down_proj.weight")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let lm_head = if vb.contains_tensor("lm_head.weight") {
        Some(vb.get((v, d), "lm_head.weight")?)
    } else {
        None
    };
    Ok(DecoderTensors {
        embed: m.get((v, d), "embed_tokens.weight")?,
        final_norm: m.get(d, "norm.weight")?,
        lm_head,
        layers,
    })
}

fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}
