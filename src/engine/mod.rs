//! The engine: run a text exactly, from the cache, or both side by side, and
//! say what happened in a [`Trace`].

mod planner;
mod trace;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Tensor;

pub use planner::{CachePlanner, LayerDecision};
pub use trace::{
    HeadTrace, LayerTrace, Mode, NeighbourTrace, STAGES, StageReader, StageTimings, Trace,
};

use crate::cache::{Database, ModelIdentity, Policy};
use crate::cache::{js_divergence, similarity};
use crate::model::llama::PrefixCache;
use crate::model::{ForwardOutput, Model, Planner, StaticPlan, TokenizedText, cosine, ms};

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The sentence embedding (mean pooling + L2 normalisation).
    pub embedding: Vec<f32>,
    /// Shadow mode: the exact run's sentence embedding.
    pub exact_embedding: Option<Vec<f32>>,
    /// Shadow mode: every map of the exact run, `[S, S]` by layer then head.
    pub exact_maps: Option<Vec<Vec<Tensor>>>,
    /// The last hidden state `[1, S, D]`.
    pub hidden: Tensor,
    /// What happened.
    pub trace: Trace,
}

/// A model, optionally a database, a policy, and (decoders) optionally a
/// prefix cache that every forward pass starts from.
#[derive(Clone)]
pub struct Engine {
    model: Arc<Model>,
    db: Option<Arc<Database>>,
    policy: Policy,
    prefix: Option<Arc<PrefixCache>>,
    /// Which side the next shadow run times first (flips every shadow run,
    /// shared by clones).
    shadow_cached_first: Arc<AtomicBool>,
}

impl Engine {
    /// An engine without a database: exact mode only.
    pub fn exact_only(model: Arc<Model>) -> Self {
        let policy = Policy::strict(model.shape());
        Self {
            model,
            db: None,
            policy,
            prefix: None,
            shadow_cached_first: Arc::default(),
        }
    }

    /// An engine serving from `db` under `policy`; refuses a database or a
    /// policy made for another model.
    pub fn new(model: Arc<Model>, db: Arc<Database>, policy: Policy) -> anyhow::Result<Self> {
        let identity = ModelIdentity::of(&model)?;
        anyhow::ensure!(
            db.manifest().model.same_model(&identity),
            "database {} was built for model {}, not {}: rebuild it for this model",
            db.dir().display(),
            db.manifest().model.describe(),
            identity.describe()
        );
        policy.check_shape(model.shape())?;
        Ok(Self {
            model,
            db: Some(db),
            policy,
            prefix: None,
            shadow_cached_first: Arc::default(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The database, if any.
    pub fn database(&self) -> Option<&Arc<Database>> {
        self.db.as_ref()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The same engine starting every forward pass from `prefix` (a
    /// decoder's prefix cache): inputs that share its leading tokens compute
    /// only the rest. Exact and cached modes only.
    pub fn with_prefix(&self, prefix: Arc<PrefixCache>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.model.decoder().is_some(),
            "prefix caching needs a decoder: pass --model smollm2 or qwen2.5-0.5b"
        );
        Ok(Self {
            prefix: Some(prefix),
            ..self.clone()
        })
    }

    /// Replaces the policy (e.g. after tuning thresholds).
    pub fn set_policy(&mut self, policy: Policy) -> anyhow::Result<()> {
        policy.check_shape(self.model.shape())?;
        self.policy = policy;
        Ok(())
    }

    /// Runs `text` in `mode`. In shadow mode the cached and the exact side
    /// are timed alike (tokenisation to output, no map capture, their order
    /// alternating from one shadow run to the next); the exact maps for the
    /// similarity readouts come from a third, untimed pass.
    pub fn run(&self, text: &str, mode: Mode) -> anyhow::Result<RunOutput> {
        anyhow::ensure!(
            self.prefix.is_none() || mode != Mode::Shadow,
            "shadow mode runs without a prefix cache"
        );
        let db = match mode {
            Mode::Exact => None,
            Mode::Cached | Mode::Shadow => Some(
                self.db
                    .as_deref()
                    .context("cached and shadow modes need a database: pass --db DIR")?,
            ),
        };
        let shadow = mode == Mode::Shadow;
        let (tokenized, pass, exact) = match db {
            Some(db) if shadow => {
                let exact_first = !self.shadow_cached_first.fetch_xor(true, Ordering::Relaxed);
                let (exact, cached) = if exact_first {
                    let exact = self.timed_pass(text, None, false)?;
                    (exact, self.timed_pass(text, Some(db), true)?)
                } else {
                    let cached = self.timed_pass(text, Some(db), true)?;
                    (self.timed_pass(text, None, false)?, cached)
                };
                (cached.0, cached.1, Some(exact.1))
            }
            _ => {
                let (tokenized, pass) = self.timed_pass(text, db, false)?;
                (tokenized, pass, None)
            }
        };
        let captured = match shadow {
            true => Some(self.exact_pass(&tokenized, true)?),
            false => None,
        };
        let layers = self.layer_traces(db, &tokenized, &pass, captured.as_ref())?;
        let exact_maps = captured
            .as_ref()
            .map(|e| {
                e.out
                    .maps
                    .iter()
                    .map(|layer| {
                        layer
                            .iter()
                            .map(|m| m.as_ref().expect("shadow captures every map").squeeze(0))
                            .collect::<candle_core::Result<Vec<_>>>()
                    })
                    .collect::<candle_core::Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(RunOutput {
            trace: Trace {
                text: text.to_string(),
                tokens: tokenized.tokens.clone(),
                truncated: tokenized.truncated,
                mode,
                policy: match mode {
                    Mode::Exact => "exact".into(),
                    _ => self.policy.name.clone(),
                },
                hit_rate: hit_rate(&layers),
                layers,
                fidelity: exact
                    .as_ref()
                    .map(|e| cosine(&pass.embedding, &e.embedding)),
                timings: pass.timings,
                exact_timings: exact.as_ref().map(|e| e.timings),
            },
            exact_embedding: exact.map(|e| e.embedding),
            exact_maps,
            embedding: pass.embedding,
            hidden: pass.out.hidden,
        })
    }

    /// Tokenises and runs `text` exactly (`db` = `None`) or from `db`, timed
    /// from tokenisation to output; with `complete`, the cached side also
    /// searches (untimed) the layers it skipped, for the trace.
    fn timed_pass(
        &self,
        text: &str,
        db: Option<&Database>,
        complete: bool,
    ) -> anyhow::Result<(TokenizedText, Pass)> {
        let start = Instant::now();
        let tokenized = self.model.tokenizer.encode(text)?;
        let tokenize = start.elapsed();
        let mut pass = match db {
            None => self.exact_pass(&tokenized, false)?,
            Some(db) => self.cached_pass(db, text, &tokenized, complete)?,
        };
        pass.timings.tokenize = ms(tokenize);
        pass.timings.total = ms(start.elapsed().saturating_sub(pass.untimed));
        Ok((tokenized, pass))
    }

    /// `text` run exactly and cached, back to back, in the order given
    /// (alternate it so neither side always runs on a warmer cache).
    pub fn timed_pair(&self, text: &str, cached_first: bool) -> anyhow::Result<TimedPair> {
        let (exact, cached) = if cached_first {
            let cached = self.run(text, Mode::Cached)?;
            (self.run(text, Mode::Exact)?, cached)
        } else {
            let exact = self.run(text, Mode::Exact)?;
            (exact, self.run(text, Mode::Cached)?)
        };
        Ok(TimedPair {
            exact: exact.trace.timings,
            cached: cached.trace.timings,
            hit_rate: cached.trace.hit_rate,
        })
    }

    /// What the exact model's own layer inputs retrieve: per layer the
    /// neighbour, per head the true similarity of its map to the exact map
    /// (calibration data; nothing is reused).
    pub fn observe(&self, text: &str) -> anyhow::Result<Observation> {
        let db = self
            .db
            .as_deref()
            .context("observing needs a database: pass --db DIR")?;
        anyhow::ensure!(
            self.prefix.is_none(),
            "observing runs without a prefix cache"
        );
        let tokenized = self.model.tokenizer.encode(text)?;
        let device = self.model.device();
        let mut planner = CachePlanner::new(db, &self.policy, tokenized.ids.len(), device)
            .exact_search()
            .observe_only();
        let pass = self.pass(&tokenized, &mut planner, Vec::new())?;
        let s = tokenized.ids.len();
        let layers = planner
            .decisions
            .iter()
            .enumerate()
            .map(|(l, d)| {
                let Some(n) = d.neighbour else {
                    return Ok(None);
                };
                let sims = (0..d.hits.len())
                    .map(|h| {
                        let ours = db.map_values_for(n.entry as usize, l, h, s)?;
                        let truth = pass.out.maps[l][h]
                            .as_ref()
                            .expect("observe captures every map");
                        Ok(similarity(
                            &ours,
                            &truth.flatten_all()?.to_vec1::<f32>()?,
                            s,
                        ))
                    })
                    .collect::<anyhow::Result<Vec<f32>>>()?;
                Ok(Some((n.distance, sims)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let searches = planner.searches.max(1) as f64;
        Ok(Observation {
            tokens: s,
            layers,
            attention_ms: pass
                .out
                .timings
                .layers
                .iter()
                .map(|t| ms(t.attention))
                .collect(),
            search_ms: ms(planner.feature_time + planner.search_time + planner.rerank_time)
                / searches,
            embedding: pass.embedding,
        })
    }

    /// The exact forward (capturing every map when `capture`).
    fn exact_pass(&self, tokenized: &TokenizedText, capture: bool) -> anyhow::Result<Pass> {
        let shape = self.model.shape();
        let mut plan = if capture {
            StaticPlan::capture_all(shape.layers, shape.heads)
        } else {
            StaticPlan::exact(shape.layers, shape.heads)
        };
        let decisions = vec![
            LayerDecision {
                neighbour: None,
                table: None,
                hits: vec![false; shape.heads],
                carried: false,
            };
            shape.layers
        ];
        self.pass(tokenized, &mut plan, decisions)
    }

    /// The forward pass under the policy, look-up and map loading timed;
    /// with `complete`, the layers whose look-up was skipped are searched
    /// afterwards (untimed) for the trace.
    fn cached_pass(
        &self,
        db: &Database,
        text: &str,
        tokenized: &TokenizedText,
        complete: bool,
    ) -> anyhow::Result<Pass> {
        let device = self.model.device();
        let mut planner = CachePlanner::new(db, &self.policy, tokenized.ids.len(), device)
            .with_identical(db.find_text(text));
        let mut pass = self.pass(tokenized, &mut planner, Vec::new())?;
        if complete {
            let start = Instant::now();
            planner.search_skipped()?;
            pass.untimed = start.elapsed();
        }
        pass.decisions = planner.decisions;
        pass.timings.feature = ms(planner.feature_time);
        pass.timings.search = ms(planner.search_time);
        pass.timings.rerank = ms(planner.rerank_time);
        pass.timings.map_load = ms(planner.load_time);
        Ok(pass)
    }

    /// Forward + pooling under `planner`, timed.
    fn pass(
        &self,
        tokenized: &TokenizedText,
        planner: &mut dyn Planner,
        decisions: Vec<LayerDecision>,
    ) -> anyhow::Result<Pass> {
        let start = Instant::now();
        let (out, pool_start, embedding) = match &self.prefix {
            None => {
                let (batch, out) = self
                    .model
                    .forward(std::slice::from_ref(tokenized), planner)?;
                let pool_start = Instant::now();
                let embedding = self.model.readout(&out.hidden, &batch)?;
                (out, pool_start, embedding)
            }
            Some(prefix) => {
                let decoder = self
                    .model
                    .decoder()
                    .context("prefix caching needs a decoder")?;
                let (out, _) = decoder.forward_after_prefix(&tokenized.ids, prefix, planner)?;
                let pool_start = Instant::now();
                let embedding = decoder.last_row(&out.hidden)?;
                (out, pool_start, embedding)
            }
        };
        let embedding = embedding.squeeze(0)?.to_vec1::<f32>()?;
        let pooling = pool_start.elapsed();
        let timings = StageTimings {
            embeddings: ms(out.timings.embeddings),
            attention: ms(out.timings.attention()),
            rest: ms(out.timings.rest()),
            pooling: ms(pooling),
            total: ms(start.elapsed()),
            ..StageTimings::default()
        };
        Ok(Pass {
            out,
            embedding,
            timings,
            decisions,
            untimed: Duration::ZERO,
        })
    }

    /// Per-layer traces; with the exact pass's maps, the true similarity of
    /// every neighbour map (reused or not) to the exact one.
    fn layer_traces(
        &self,
        db: Option<&Database>,
        tokenized: &TokenizedText,
        pass: &Pass,
        exact: Option<&Pass>,
    ) -> anyhow::Result<Vec<LayerTrace>> {
        let s = tokenized.ids.len();
        let causal = self.model.decoder().is_some();
        // Decoders: tokens each neighbour shares with the query, by entry.
        let mut shared: HashMap<u32, usize> = HashMap::new();
        pass.decisions
            .iter()
            .enumerate()
            .map(|(l, decision)| {
                let found = decision.neighbour.zip(db);
                let shared_prefix = match found {
                    Some((n, db)) if causal => Some(match shared.get(&n.entry) {
                        Some(&p) => p,
                        None => {
                            let entry = &db.entries()[n.entry as usize];
                            let ids = self.model.tokenizer.encode(&entry.text)?.ids;
                            let p = common_prefix(&ids, &tokenized.ids).min(s);
                            shared.insert(n.entry, p);
                            p
                        }
                    }),
                    _ => None,
                };
                let heads = decision
                    .hits
                    .iter()
                    .enumerate()
                    .map(|(h, &hit)| {
                        let is_static = self.policy.is_static(l, h);
                        let predicted = found
                            .filter(|_| !is_static)
                            .map(|(n, _)| self.policy.predicted(l, h, n.distance));
                        // The map this head reuses (or would): a static
                        // head's comes from the per-length table.
                        let source = match is_static {
                            true => decision.table.zip(db),
                            false => found.map(|(n, db)| (n.entry, db)),
                        };
                        let (mut similar, mut js, mut new_rows) = (None, None, None);
                        if let (Some((entry, db)), Some(exact)) = (source, exact) {
                            let ours = db.map_values_for(entry as usize, l, h, s)?;
                            let truth = exact.out.maps[l][h]
                                .as_ref()
                                .expect("shadow captures every map");
                            let truth = truth.flatten_all()?.to_vec1::<f32>()?;
                            similar = Some(similarity(&ours, &truth, s));
                            js = Some(js_divergence(&ours, &truth, s));
                            new_rows = shared_prefix
                                .filter(|&p| p < s)
                                .map(|p| similarity(&ours[p * s..], &truth[p * s..], s));
                        }
                        Ok(HeadTrace {
                            hit,
                            predicted,
                            similarity: similar,
                            js,
                            similarity_new_rows: new_rows,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let neighbour = found.map(|(n, db)| {
                    let e = &db.entries()[n.entry as usize];
                    NeighbourTrace {
                        entry: n.entry,
                        text: e.text.clone(),
                        tokens: e.tokens,
                        distance: n.distance,
                        shared_prefix,
                        carried: decision.carried,
                    }
                });
                Ok(LayerTrace {
                    neighbour,
                    heads,
                    timing: pass.out.timings.layers[l],
                })
            })
            .collect()
    }
}

/// Length of the longest common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One text timed exactly and cached, back to back.
#[derive(Debug, Clone, Copy)]
pub struct TimedPair {
    /// The exact run's stage times.
    pub exact: StageTimings,
    /// The cached run's stage times (look-up and map loading included).
    pub cached: StageTimings,
    /// Share of heads the cached run reused.
    pub hit_rate: f64,
}

/// What the exact model's inputs retrieve for one text (see [`Engine::observe`]).
#[derive(Debug, Clone)]
pub struct Observation {
    /// Token count.
    pub tokens: usize,
    /// Per layer: the neighbour's distance and, per head, the true similarity
    /// of its map (`None` when no entry qualifies).
    pub layers: Vec<Option<(f32, Vec<f32>)>>,
    /// The exact sentence embedding.
    pub embedding: Vec<f32>,
    /// Exact attention time of each layer, ms.
    pub attention_ms: Vec<f64>,
    /// Cost of one search (feature + search), ms: the per-layer look-up
    /// costs this per layer, the single look-up once per input.
    pub search_ms: f64,
}

/// One timed forward pass and what its planner decided.
struct Pass {
    out: ForwardOutput,
    embedding: Vec<f32>,
    timings: StageTimings,
    decisions: Vec<LayerDecision>,
    /// Work done after the pass for the trace only, kept out of its total.
    untimed: Duration,
}

/// Share of heads that hit.
fn hit_rate(layers: &[LayerTrace]) -> f64 {
    let (hits, all) = layers
        .iter()
        .flat_map(|l| &l.heads)
        .fold((0usize, 0usize), |(h, a), head| {
            (h + usize::from(head.hit), a + 1)
        });
    if all == 0 {
        0.0
    } else {
        hits as f64 / all as f64
    }
}
