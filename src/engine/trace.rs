//! What one run did, for displays and scripts (serde-serialisable).

use serde::Serialize;

use crate::model::LayerTiming;

/// How a text is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The exact model, no look-up.
    Exact,
    /// Look-up and reuse under the policy.
    Cached,
    /// Cached, plus an exact run timed the same way, and an untimed exact
    /// run capturing every map to measure the true similarity of every
    /// neighbour map; the output fidelity compares the two timed runs.
    Shadow,
}

impl Mode {
    /// Parses `exact`, `cached` or `shadow`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "exact" => Ok(Mode::Exact),
            "cached" => Ok(Mode::Cached),
            "shadow" => Ok(Mode::Shadow),
            other => anyhow::bail!("unknown mode `{other}`: use exact, cached or shadow"),
        }
    }
}

/// The neighbour a layer's look-up found.
#[derive(Debug, Clone, Serialize)]
pub struct NeighbourTrace {
    /// Entry number.
    pub entry: u32,
    /// Its text.
    pub text: String,
    /// Its token count.
    pub tokens: usize,
    /// Feature distance.
    pub distance: f32,
    /// Decoders: leading tokens the query and the entry share. A causal
    /// map's rows for them are identical in both (what a prefix cache
    /// serves anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_prefix: Option<usize>,
    /// The previous layer's neighbour, kept without a search (the policy
    /// carries neighbours and it lies within every head's threshold).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
}

/// One head's decision.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HeadTrace {
    /// True when the neighbour's map was reused.
    pub hit: bool,
    /// Similarity predicted from the distance (`None` without a neighbour).
    pub predicted: Option<f32>,
    /// Shadow mode: similarity (1 − mean row TV) of the neighbour's map to
    /// the exact map.
    pub similarity: Option<f32>,
    /// Shadow mode: mean row JS divergence of the same two maps.
    pub js: Option<f32>,
    /// Shadow mode, decoders: the similarity over the rows after the shared
    /// prefix only (what map reuse adds beyond a prefix cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity_new_rows: Option<f32>,
}

/// One layer of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTrace {
    /// The neighbour used by this layer (`None`: no qualifying entry or no
    /// look-up in exact mode).
    pub neighbour: Option<NeighbourTrace>,
    /// Per head, in order.
    pub heads: Vec<HeadTrace>,
    /// Time of this layer.
    pub timing: LayerTiming,
}

/// Wall-clock time of each stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    /// Tokenization.
    pub tokenize: f64,
    /// Embedding look-up and norm.
    pub embeddings: f64,
    /// Computing look-up features.
    pub feature: f64,
    /// Searching the index for candidates: the sketch scan (or an HNSW
    /// search, or the exact scan of a small bucket).
    pub search: f64,
    /// Re-ranking the sketch scan's candidates by exact feature distance.
    pub rerank: f64,
    /// Loading (and converting, cropping) reused maps.
    pub map_load: f64,
    /// Attention (projections + core) of all layers.
    pub attention: f64,
    /// Everything else in the layers.
    pub rest: f64,
    /// Pooling the sentence embedding.
    pub pooling: f64,
    /// Tokenization to output.
    pub total: f64,
}

impl StageTimings {
    /// Applies `f` to each field of `self` with the same field of `other`.
    fn zip_with(&mut self, other: &Self, f: impl Fn(&mut f64, f64)) {
        f(&mut self.tokenize, other.tokenize);
        f(&mut self.embeddings, other.embeddings);
        f(&mut self.feature, other.feature);
        f(&mut self.search, other.search);
        f(&mut self.rerank, other.rerank);
        f(&mut self.map_load, other.map_load);
        f(&mut self.attention, other.attention);
        f(&mut self.rest, other.rest);
        f(&mut self.pooling, other.pooling);
        f(&mut self.total, other.total);
    }

    /// Adds `other` field by field.
    pub fn accumulate(&mut self, other: &Self) {
        self.zip_with(other, |a, b| *a += b);
    }

    /// Every field multiplied by `factor`.
    pub fn scaled(mut self, factor: f64) -> Self {
        let copy = self;
        self.zip_with(&copy, |a, _| *a *= factor);
        self
    }

    /// Finding the neighbour: feature, search, re-rank.
    pub fn search_stages(&self) -> f64 {
        self.feature + self.search + self.rerank
    }

    /// The look-up and map loading: [`Self::search_stages`] and map load.
    pub fn lookup(&self) -> f64 {
        self.search_stages() + self.map_load
    }

    /// Attention including the look-up and map loading that served it: the
    /// cached side of an honest attention speedup.
    pub fn attention_with_lookup(&self) -> f64 {
        self.attention + self.lookup()
    }
}

/// Reads one stage's time from [`StageTimings`].
pub type StageReader = fn(&StageTimings) -> f64;

/// The stages a latency breakdown shows, in order (`rest` includes the
/// embeddings and pooling).
pub const STAGES: [(&str, StageReader); 7] = [
    ("tokenize", |t| t.tokenize),
    ("feature", |t| t.feature),
    ("search", |t| t.search),
    ("re-rank", |t| t.rerank),
    ("map load", |t| t.map_load),
    ("attention", |t| t.attention),
    ("rest", |t| t.rest + t.embeddings + t.pooling),
];

/// Everything one run did.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The input text.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<String>,
    /// True when the text was cut to the model's maximum length (only its
    /// first `tokens.len()` tokens were run).
    pub truncated: bool,
    /// How it was run.
    pub mode: Mode,
    /// The policy's name.
    pub policy: String,
    /// Per layer, in order.
    pub layers: Vec<LayerTrace>,
    /// Share of heads served from the cache.
    pub hit_rate: f64,
    /// Shadow mode: cosine of the cached to the exact sentence embedding.
    pub fidelity: Option<f32>,
    /// Stage timings of the run (the cached run in shadow mode).
    pub timings: StageTimings,
    /// Shadow mode: the same stages for the exact run.
    pub exact_timings: Option<StageTimings>,
}

impl Trace {
    /// Number of heads served from the cache, over all layers.
    pub fn hits(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| &l.heads)
            .filter(|h| h.hit)
            .count()
    }
}
