//! The model: files on disk, tokenizer, and our own BERT forward pass with
//! per-head attention plans.

mod attention;
mod batch;
mod bert;
mod config;
mod device;
mod error;
pub mod fused;
mod plan;
mod timing;
mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use attention::{AttentionOutput, SelfAttention};
pub use batch::Batch;
pub use bert::{BertEncoder, EncoderLayer, ForwardOutput};
pub use config::{BertConfig, ModelShape, load_bert_config};
pub use device::{device_name, open_device};
pub use error::ModelError;
pub use fused::Kernels;
pub use plan::{HeadPlan, LayerPlan, Planner, StaticPlan};
pub use timing::{ForwardTimings, LayerTiming, ms};
pub use tokenizer::{TextTokenizer, TokenizedText};

use crate::fetch::{Fetcher, MINILM_L6, sha256_file};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The default model (all-MiniLM-L6-v2), fetched on first use.
    Default,
    /// A local Hugging Face-layout BERT directory.
    Dir(PathBuf),
}

impl ModelSource {
    /// `None` → the default model; a path → that directory.
    pub fn from_arg(arg: Option<&Path>) -> Self {
        arg.map_or(ModelSource::Default, |p| ModelSource::Dir(p.to_path_buf()))
    }

    /// The model directory, fetching the default model if needed.
    pub fn resolve(&self, why: &str) -> anyhow::Result<PathBuf> {
        match self {
            ModelSource::Default => Ok(Fetcher::from_env()?.ensure(&MINILM_L6, why)?),
            ModelSource::Dir(dir) => Ok(dir.clone()),
        }
    }
}

/// The three files of a model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// Finds the files in `dir`, failing with what is missing.
    pub fn in_dir(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::NoDirectory(dir.to_path_buf()));
        }
        let file = |name: &'static str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: name,
                })
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config: file("config.json")?,
            weights: file("model.safetensors")?,
            tokenizer: file("tokenizer.json")?,
        })
    }
}

/// A loaded model: tokenizer + encoder.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it was loaded from.
    pub files: ModelFiles,
    /// Its config.
    pub config: BertConfig,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Its encoder.
    pub encoder: BertEncoder,
    /// sha256 of the config and weights files, computed on first use.
    file_sha256: OnceLock<(String, String)>,
}

/// Sentence embeddings of a few texts with what they cost.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Tokenized inputs.
    pub texts: Vec<TokenizedText>,
    /// One L2-normalised embedding per text.
    pub embeddings: Vec<Vec<f32>>,
    /// Time to tokenize all texts.
    pub tokenize: Duration,
    /// Forward-pass timers.
    pub forward: ForwardTimings,
    /// Pooling and normalisation.
    pub pooling: Duration,
}

impl Model {
    /// Loads a model from `source` (fetching the default model if needed) on
    /// `device`; `why` says on stderr which command needed the fetch.
    pub fn load(source: &ModelSource, device: &Device, why: &str) -> anyhow::Result<Self> {
        Self::load_dir(&source.resolve(why)?, device)
    }

    /// Loads a model from a Hugging Face-layout BERT directory.
    pub fn load_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let files = ModelFiles::in_dir(dir)?;
        let config = load_bert_config(&files.config)?;
        let tokenizer = TextTokenizer::from_file(&files.tokenizer, config.max_position_embeddings)?;
        let weights_err = |e: candle_core::Error| ModelError::Weights {
            path: files.weights.clone(),
            detail: e.to_string().lines().next().unwrap_or("").to_string(),
        };
        // SAFETY: the weights file is memory-mapped read-only; attncache never
        // writes model files while a model is loaded.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&files.weights], DType::F32, device) }
                .map_err(weights_err)?;
        let encoder = BertEncoder::load(vb, &config).map_err(weights_err)?;
        Ok(Self {
            files,
            config,
            tokenizer,
            encoder,
            file_sha256: OnceLock::new(),
        })
    }

    /// sha256 of `config.json` and `model.safetensors`, hashed once per
    /// loaded model (the weights file is large).
    pub fn file_sha256(&self) -> std::io::Result<(String, String)> {
        if let Some(hashes) = self.file_sha256.get() {
            return Ok(hashes.clone());
        }
        let hashes = (
            sha256_file(&self.files.config)?,
            sha256_file(&self.files.weights)?,
        );
        Ok(self.file_sha256.get_or_init(|| hashes).clone())
    }

    /// The encoder's sizes.
    pub fn shape(&self) -> &ModelShape {
        self.encoder.shape()
    }

    /// Tokenizes `texts` and builds one padded batch.
    pub fn batch(&self, texts: &[TokenizedText]) -> anyhow::Result<Batch> {
        Ok(Batch::new(
            texts,
            self.encoder.pad_token_id(),
            self.encoder.device(),
        )?)
    }

    /// Tokenizes each text.
    pub fn tokenize(&self, texts: &[impl AsRef<str>]) -> anyhow::Result<Vec<TokenizedText>> {
        texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()))
            .collect()
    }

    /// Runs the encoder on tokenized texts under `planner`.
    pub fn forward(
        &self,
        texts: &[TokenizedText],
        planner: &mut dyn Planner,
    ) -> anyhow::Result<(Batch, ForwardOutput)> {
        let batch = self.batch(texts)?;
        let out = self
            .encoder
            .forward(&batch, planner)
            .context("forward pass failed")?;
        Ok((batch, out))
    }

    /// Every post-softmax map of one input from the exact model, `[S, S]` by
    /// layer then head.
    pub fn capture_maps(&self, text: &TokenizedText) -> anyhow::Result<Vec<Vec<Tensor>>> {
        let shape = self.shape();
        let (_, out) = self.forward(
            std::slice::from_ref(text),
            &mut StaticPlan::capture_all(shape.layers, shape.heads),
        )?;
        out.maps
            .into_iter()
            .map(|layer| {
                layer
                    .into_iter()
                    .map(|m| Ok(m.expect("capture_all captures every head").squeeze(0)?))
                    .collect()
            })
            .collect()
    }

    /// Sentence embeddings (mean pooling + L2 normalisation) of `texts`, run
    /// as one padded batch with the exact plan.
    pub fn embed(&self, texts: &[impl AsRef<str>]) -> anyhow::Result<Embedded> {
        let start = Instant::now();
        let tokenized = self.tokenize(texts)?;
        let tokenize = start.elapsed();
        let shape = self.shape();
        let (batch, out) = self.forward(
            &tokenized,
            &mut StaticPlan::exact(shape.layers, shape.heads),
        )?;
        let start = Instant::now();
        let pooled: Tensor = self.encoder.sentence_embeddings(&out.hidden, &batch)?;
        let embeddings = pooled.to_vec2::<f32>()?;
        Ok(Embedded {
            texts: tokenized,
            embeddings,
            tokenize,
            forward: out.timings,
            pooling: start.elapsed(),
        })
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
