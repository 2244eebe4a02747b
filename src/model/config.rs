//! Reading and checking a BERT `config.json` (candle-transformers' config type).

use std::path::Path;

pub use candle_transformers::models::bert::Config as BertConfig;

use super::error::ModelError;

/// The sizes of an encoder that the rest of attncache works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelShape {
    /// Number of transformer layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden size (`heads * head_dim`).
    pub hidden: usize,
    /// Longest input the position embeddings allow.
    pub max_positions: usize,
}

impl ModelShape {
    /// The shape described by a BERT config.
    pub fn of(config: &BertConfig) -> Self {
        Self {
            layers: config.num_hidden_layers,
            heads: config.num_attention_heads,
            head_dim: config.hidden_size / config.num_attention_heads.max(1),
            hidden: config.hidden_size,
            max_positions: config.max_position_embeddings,
        }
    }
}

/// The architecture a `config.json` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// A BERT encoder.
    Bert,
    /// A Llama-family decoder (Llama or Qwen2, see [`super::llama::Family`]).
    Llama,
}

/// Reads a `config.json` as JSON and says which architecture it describes:
/// `model_type` "bert", "llama" or "qwen2", or without a model type a
/// `Bert*`, `Llama*` or `Qwen2*` architecture; anything else is refused.
pub fn read_config(path: &Path) -> Result<(Architecture, serde_json::Value), ModelError> {
    let malformed = |detail: String| ModelError::MalformedConfig {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| malformed(e.to_string()))?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let unsupported = |found: &str| ModelError::Unsupported {
        path: path.to_path_buf(),
        found: found.to_string(),
    };
    if let Some(model_type) = raw.get("model_type") {
        return match model_type.as_str().unwrap_or("?") {
            "bert" => Ok((Architecture::Bert, raw)),
            "llama" | "qwen2" => Ok((Architecture::Llama, raw)),
            other => Err(unsupported(other)),
        };
    }
    let architecture = raw
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str())
        .map(str::to_string);
    match architecture.as_deref() {
        Some(arch) if arch.starts_with("Bert") => Ok((Architecture::Bert, raw)),
        Some(arch) if arch.starts_with("Llama") || arch.starts_with("Qwen2") => {
            Ok((Architecture::Llama, raw))
        }
        Some(arch) => Err(unsupported(arch)),
        None => Err(unsupported("unknown (no model_type or architectures)")),
    }
}

/// Parses and checks the BERT config `raw` read from `path`.
pub fn bert_config(path: &Path, raw: serde_json::Value) -> Result<BertConfig, ModelError> {
    let config: BertConfig =
        serde_json::from_value(raw).map_err(|e| ModelError::MalformedConfig {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    check_shape(path, &config)?;
    Ok(config)
}

fn check_shape(path: &Path, config: &BertConfig) -> Result<(), ModelError> {
    let bad = |detail: String| ModelError::BadShape {
        path: path.to_path_buf(),
        detail,
    };
    if config.num_attention_heads == 0 || config.num_hidden_layers == 0 {
        return Err(bad("it has no layers or no attention heads".into()));
    }
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
    {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    if config.max_position_embeddings < 2 {
        return Err(bad("max_position_embeddings must be at least 2".into()));
    }
    Ok(())
}
