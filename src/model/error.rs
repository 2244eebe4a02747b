//! Errors of loading a model, each a one-line message that says what to do.

use std::path::PathBuf;

/// Why a model directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The directory does not exist.
    #[error(
        "model {0} does not exist: pass minilm, smollm2, qwen2.5-0.5b, a .gguf file or a Hugging Face-layout BERT, Llama or Qwen2 directory (config.json, model.safetensors, tokenizer.json)"
    )]
    NoDirectory(PathBuf),
    /// A required file is missing.
    #[error(
        "{dir} has no {file}: a model directory needs config.json, model.safetensors and tokenizer.json"
    )]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file name.
        file: &'static str,
    },
    /// `config.json` is not valid JSON or lacks required fields.
    #[error("{path} is malformed ({detail}): fix it or re-export the model with transformers")]
    MalformedConfig {
        /// Path of the config file.
        path: PathBuf,
        /// What serde said.
        detail: String,
    },
    /// The model is of an architecture attncache does not run.
    #[error(
        "{path} describes a `{found}` model: attncache runs BERT encoders (model_type \"bert\") and Llama-family decoders (\"llama\" or \"qwen2\", as a GGUF file or a Hugging Face directory); pass one of those"
    )]
    Unsupported {
        /// Path of the config file.
        path: PathBuf,
        /// The model type or architecture found.
        found: String,
    },
    /// The config's numbers do not describe a usable model.
    #[error("{path} is inconsistent: {detail}")]
    BadShape {
        /// Path of the config file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The tokenizer file could not be loaded.
    #[error("cannot load the tokenizer {path}: {detail}")]
    Tokenizer {
        /// Path of the tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate said.
        detail: String,
    },
    /// A GGUF file could not be read.
    #[error("cannot read the GGUF file {path}: {detail}")]
    Gguf {
        /// Path of the file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The weights could not be loaded.
    #[error("cannot load the weights {path}: {detail}")]
    Weights {
        /// Path of the weights file.
        path: PathBuf,
        /// What candle said.
        detail: String,
    },
}
