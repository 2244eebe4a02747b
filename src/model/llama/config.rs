//! The sizes of a Llama-family decoder (Llama itself, or Qwen2: Llama with
//! biases on the Q, K and V projections), read from GGUF metadata or from a
//! Hugging Face `config.json`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::model::error::ModelError;

/// The decoder architectures our Llama forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama (SmolLM2, Llama 2/3 without rope scaling).
    Llama,
    /// Qwen2 / Qwen2.5: Llama plus Q, K, V biases.
    Qwen2,
}

impl Family {
    /// Every family, as named in GGUF's `general.architecture` and HF's
    /// `model_type`.
    pub const ALL: [Family; 2] = [Family::Llama, Family::Qwen2];

    /// The name GGUF and Hugging Face use.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
        }
    }

    /// The family called `name`, if we run it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether its Q, K and V projections carry biases.
    pub fn qkv_bias(self) -> bool {
        self == Family::Qwen2
    }
}

/// What a Llama forward pass needs to know about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The architecture.
    pub family: Family,
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

    /// Reads the `<architecture>.*` metadata of a GGUF file.
    pub fn from_gguf(path: &Path, metadata: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let bad = |detail: String| ModelError::BadShape {
            path: path.to_path_buf(),
            detail,
        };
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map_or("unknown", |s| s.as_str());
        let Some(family) = Family::from_name(arch) else {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                found: arch.to_string(),
            });
        };
        let int = |key: &str| -> Result<usize, ModelError> {
            let key = &format!("{arch}.{key}");
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
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let vocab = match metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => int("vocab_size")?,
        };
        let config = Self {
            family,
            hidden: int("embedding_length")?,
            ffn: int("feed_forward_length")?,
            vocab,
            layers: int("block_count")?,
            heads: int("attention.head_count")?,
            kv_heads: int("attention.head_count_kv")?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5) as f64,
            rope_theta: float("rope.freq_base", 10_000.0),
            max_positions: int("context_length")?,
            // llama.cpp permutes a Llama's Q and K rows for its interleaved
            // rotation; Qwen2's it keeps in the Hugging Face layout (NeoX).
            rope_interleaved: family == Family::Llama,
        };
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json` of `model_type` "llama" or "qwen2"
    /// (`family`).
    pub fn from_hf_json(
        path: &Path,
        family: Family,
        raw: serde_json::Value,
    ) -> Result<Self, ModelError> {
        let malformed = |detail: String| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            detail,
        };
        let raw_sliding_window = raw["use_sliding_window"].as_bool().unwrap_or(false);
        let hf: candle_transformers::models::llama::LlamaConfig =
            serde_json::from_value(raw).map_err(|e| malformed(e.to_string()))?;
        if family == Family::Qwen2 && raw_sliding_window {
            return Err(ModelError::BadShape {
                path: path.to_path_buf(),
                detail:
                    "use_sliding_window is set: sliding-window Qwen2 attention is not supported"
                        .into(),
            });
        }
        if hf.rope_scaling.is_some() {
            return Err(ModelError::BadShape {
                path: path.to_path_buf(),
                detail: "rope_scaling (Llama 3.1 style) is not supported".into(),
            });
        }
        let config = Self {
            family,
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
