//! The sizes of a Llama-family decoder, read from GGUF metadata or from a
//! Hugging Face `config.json`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::model::error::ModelError;

/// What a Llama forward pass needs to know about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Feed-forward (gate/up) width.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Longest input the model was trained for.
    pub max_positions: usize,
    /// RoPE rotates pairs `(2i, 2i+1)` (llama.cpp's layout of the Q/K rows in
    /// GGUF files) instead of `(i, i + d/2)` (the Hugging Face layout).
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Reads the `llama.*` metadata of a GGUF file.
    pub fn from_gguf(path: &Path, metadata: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let bad = |detail: String| ModelError::BadShape {
            path: path.to_path_buf(),
            detail,
        };
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map_or("unknown", |s| s.as_str());
        if arch != "llama" {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                found: arch.to_string(),
            });
        }
        let int = |key: &str| -> Result<usize, ModelError> {
            let v = metadata
                .get(key)
                .ok_or_else(|| bad(format!("the GGUF metadata has no {key}")))?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| bad(format!("{key}: {e}")))
        };
        let float = |key: &str, default: f32| {
            metadata
                .get(key)
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let vocab = match metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => int("llama.vocab_size")?,
        };
        let config = Self {
            hidden: int("llama.embedding_length")?,
            ffn: int("llama.feed_forward_length")?,
            vocab,
            layers: int("llama.block_count")?,
            heads: int("llama.attention.head_count")?,
            kv_heads: int("llama.attention.head_count_kv")?,
            rms_eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5) as f64,
            rope_theta: float("llama.rope.freq_base", 10_000.0),
            max_positions: int("llama.context_length")?,
            rope_interleaved: true,
        };
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json` of `model_type` "llama".
    pub fn from_hf_json(path: &Path, raw: serde_json::Value) -> Result<Self, ModelError> {
        let malformed = |detail: String| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            detail,
        };
        let hf: candle_transformers::models::llama::LlamaConfig =
            serde_json::from_value(raw).map_err(|e| malformed(e.to_string()))?;
        if hf.rope_scaling.is_some() {
            return Err(ModelError::BadShape {
                path: path.to_path_buf(),
                detail: "rope_scaling (Llama 3.1 style) is not supported".into(),
            });
        }
        let config = Self {
            hidden: hf.hidden_size,
            ffn: hf.intermediate_size,
            vocab: hf.vocab_size,
            layers: hf.num_hidden_layers,
            heads: hf.num_attention_heads,
            kv_heads: hf.num_key_value_heads(),
            rms_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_positions: hf.max_position_embeddings,
            rope_interleaved: false,
        };
        config.check().map_err(|detail| ModelError::BadShape {
            path: path.to_path_buf(),
            detail,
        })?;
        Ok(config)
    }

    /// Says what is inconsistent, if anything.
    fn check(&self) -> Result<(), String> {
        if self.layers == 0 || self.heads == 0 || self.kv_heads == 0 {
            return Err("it has no layers or no attention heads".into());
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden, self.heads
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} query heads do not split into {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head width {} is odd: RoPE needs pairs",
                self.head_dim()
            ));
        }
        if self.heads > 64 {
            return Err(format!(
                "{} heads per layer: at most 64 are supported",
                self.heads
            ));
        }
        if self.max_positions < 2 {
            return Err("the context length must be at least 2".into());
        }
        Ok(())
    }
}
