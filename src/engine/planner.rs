//! The cached-mode planner: look-up, decision and map loading per layer.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::cache::{Database, Lookup, Neighbour, Policy, SearchMethod, SearchTimes, feature};
use crate::model::{HeadPlan, LayerPlan, Planner, ReusedMap};

/// What the planner decided for one layer.
#[derive(Debug, Clone)]
pub struct LayerDecision {
    /// The neighbour found, if any.
    pub neighbour: Option<Neighbour>,
    /// The entry serving the layer's static heads (the per-length table's,
    /// or the identical entry), if it has any.
    pub table: Option<u32>,
    /// Per head: reused or not.
    pub hits: Vec<bool>,
    /// The neighbour is the previous layer's, kept without a search
    /// ([`Policy::carries`]).
    pub carried: bool,
}

/// Plans each layer from the database under a policy, timing each stage.
pub struct CachePlanner<'a> {
    db: &'a Database,
    policy: &'a Policy,
    query_len: usize,
    device: Device,
    method: SearchMethod,
    /// When false, look up and decide but reuse nothing (calibration data).
    reuse: bool,
    /// The layer-0 neighbour for single look-up policies.
    single: Option<Option<Neighbour>>,
    /// An entry with exactly the query's text: every layer uses it, no search.
    identical: Option<Neighbour>,
    /// Whether any entry may serve a query of this length: without one,
    /// no feature is computed and nothing searched.
    candidates: bool,
    /// The per-length table's entry for static heads.
    table: Option<u32>,
    /// A searched layer reused no head and the policy stops there: deeper
    /// layers search nothing.
    stopped: bool,
    /// The neighbour of the last layer that had one (per-layer look-up),
    /// offered to the next when the policy carries neighbours.
    previous: Option<Neighbour>,
    /// Inputs of the layers whose look-up was skipped (no head may hit, or
    /// the look-up stopped).
    skipped: Vec<(usize, Tensor)>,
    /// Decisions so far, by layer.
    pub decisions: Vec<LayerDecision>,
    /// Time spent computing features.
    pub feature_time: Duration,
    /// Time spent searching for candidates (sketch scan, HNSW or scan).
    pub search_time: Duration,
    /// Time spent re-ranking the sketch scan's candidates.
    pub rerank_time: Duration,
    /// Time spent loading maps.
    pub load_time: Duration,
    /// Number of searches run.
    pub searches: usize,
}

impl<'a> CachePlanner<'a> {
    /// A planner for a query of `query_len` tokens.
    pub fn new(db: &'a Database, policy: &'a Policy, query_len: usize, device: &Device) -> Self {
        Self {
            db,
            policy,
            query_len,
            device: device.clone(),
            method: SearchMethod::Indexed,
            reuse: true,
            single: None,
            identical: None,
            candidates: db.index().has_candidates(query_len, policy.lengths),
            table: db.index().first_of_length(query_len),
            stopped: false,
            previous: None,
            skipped: Vec::new(),
            decisions: Vec::new(),
            feature_time: Duration::ZERO,
            search_time: Duration::ZERO,
            rerank_time: Duration::ZERO,
            load_time: Duration::ZERO,
            searches: 0,
        }
    }

    /// Searches with an exact scan instead of the index.
    pub fn exact_search(mut self) -> Self {
        self.method = SearchMethod::ExactScan;
        self
    }

    /// Uses `entry` (an entry with exactly the query's text) in every layer
    /// without searching.
    pub fn with_identical(mut self, entry: Option<u32>) -> Self {
        self.identical = entry.map(|entry| Neighbour {
            entry,
            distance: 0.0,
        });
        self
    }

    /// Searches, untimed, the layers whose look-up was skipped because no
    /// head could hit, so a shadow trace still shows their neighbours.
    pub fn search_skipped(&mut self) -> candle_core::Result<()> {
        let times = (self.feature_time, self.search_time, self.rerank_time);
        let skipped = std::mem::take(&mut self.skipped);
        for (layer, input) in &skipped {
            let found = match self.policy.lookup {
                Lookup::PerLayer => self.search(*layer, input)?,
                // Layer 0 was skipped too unless `single` is already set.
                Lookup::Single => match self.single {
                    Some(n) => n,
                    None => {
                        let n = self.search(0, &skipped[0].1)?;
                        self.single = Some(n);
                        n
                    }
                },
            };
            self.decisions[*layer].neighbour = found;
        }
        (self.feature_time, self.search_time, self.rerank_time) = times;
        Ok(())
    }

    /// Looks up in every layer but computes (and captures) every head
    /// exactly: what the exact model's own inputs would retrieve.
    pub fn observe_only(mut self) -> Self {
        self.reuse = false;
        self
    }

    fn search(&mut self, layer: usize, input: &Tensor) -> candle_core::Result<Option<Neighbour>> {
        if !self.candidates {
            return Ok(None);
        }
        let feature = self.feature(layer, input)?;
        Ok(self.search_feature(layer, &feature))
    }

    /// The layer's feature, timed.
    fn feature(&mut self, layer: usize, input: &Tensor) -> candle_core::Result<Vec<f32>> {
        let start = Instant::now();
        let feature = self.db.query_feature(layer, input)?;
        self.feature_time += start.elapsed();
        Ok(feature)
    }

    /// The previous layer's neighbour, measured at this layer's feature, when
    /// the policy carries it and it lies within every head's threshold;
    /// else a search.
    fn carry_or_search(
        &mut self,
        layer: usize,
        input: &Tensor,
    ) -> candle_core::Result<(Option<Neighbour>, bool)> {
        let carrying = self.reuse && self.policy.carry_neighbour;
        let (Some(previous), true, true) = (self.previous, carrying, self.candidates) else {
            return Ok((self.search(layer, input)?, false));
        };
        let feature = self.feature(layer, input)?;
        let start = Instant::now();
        let distance = feature::distance(
            &feature,
            self.db.features().get(layer, previous.entry as usize),
        );
        self.search_time += start.elapsed();
        if self.policy.carries(layer, distance) {
            let carried = Neighbour {
                entry: previous.entry,
                distance,
            };
            return Ok((Some(carried), true));
        }
        Ok((self.search_feature(layer, &feature), false))
    }

    /// Searches the database with a computed feature, timed.
    fn search_feature(&mut self, layer: usize, feature: &[f32]) -> Option<Neighbour> {
        self.searches += 1;
        let mut times = SearchTimes::default();
        let found = self.db.search_timed(
            layer,
            feature,
            self.query_len,
            self.policy.lengths,
            self.method,
            &mut times,
        );
        self.search_time += times.candidates;
        self.rerank_time += times.rerank;
        found
    }

    /// Each head's plan: the map of its source entry, or exact; the maps of
    /// one entry are loaded in one call.
    fn load(&self, layer: usize, sources: &[Option<u32>]) -> candle_core::Result<Vec<HeadPlan>> {
        let mut plans = vec![HeadPlan::Exact; sources.len()];
        let mut entries: Vec<u32> = sources.iter().flatten().copied().collect();
        entries.sort_unstable();
        entries.dedup();
        for entry in entries {
            let heads: Vec<usize> = (0..sources.len())
                .filter(|&h| sources[h] == Some(entry))
                .collect();
            let maps = self
                .db
                .maps_for(entry as usize, layer, &heads, self.query_len, &self.device)
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
            for (i, h) in heads.into_iter().enumerate() {
                plans[h] = HeadPlan::Reuse(ReusedMap::stacked(maps.clone(), i));
            }
        }
        Ok(plans)
    }
}

impl Planner for CachePlanner<'_> {
    fn plan_layer(&mut self, layer: usize, input: &Tensor) -> candle_core::Result<LayerPlan> {
        let can_skip = self.reuse && (self.stopped || !self.policy.may_hit(layer));
        let searches =
            self.identical.is_none() && !can_skip && self.policy.lookup == Lookup::PerLayer;
        let mut carried = false;
        let neighbour = match self.policy.lookup {
            _ if self.identical.is_some() => self.identical,
            _ if can_skip => {
                self.skipped.push((layer, input.clone()));
                None
            }
            Lookup::PerLayer => {
                let found;
                (found, carried) = self.carry_or_search(layer, input)?;
                self.previous = found;
                found
            }
            Lookup::Single => match self.single {
                Some(n) => n,
                None => {
                    let first = if layer == 0 {
                        input.clone()
                    } else {
                        self.skipped[0].1.clone()
                    };
                    let n = self.search(0, &first)?;
                    self.single = Some(n);
                    n
                }
            },
        };
        let heads = self.policy.max_distance[layer].len();
        // The entry each head reuses: static heads the table's, the others
        // the neighbour's when it lies within their threshold.
        let table = self
            .policy
            .has_static(layer)
            .then(|| self.identical.map(|n| n.entry).or(self.table))
            .flatten();
        let sources: Vec<Option<u32>> = (0..heads)
            .map(|h| match self.policy.is_static(layer, h) {
                true => table,
                false => neighbour
                    .filter(|n| self.policy.hits(layer, h, n.distance))
                    .map(|n| n.entry),
            })
            .collect();
        let hits: Vec<bool> = sources.iter().map(Option::is_some).collect();
        let looked_up_hit = (0..heads).any(|h| hits[h] && !self.policy.is_static(layer, h));
        if self.reuse && self.policy.stop_after_miss && searches && !looked_up_hit {
            self.stopped = true;
        }
        let start = Instant::now();
        let plans = match self.reuse {
            false => vec![HeadPlan::Capture; heads],
            true => self.load(layer, &sources)?,
        };
        self.device.synchronize()?;
        self.load_time += start.elapsed();
        self.decisions.push(LayerDecision {
            neighbour,
            table,
            hits: if self.reuse { hits } else { vec![false; heads] },
            carried,
        });
        Ok(LayerPlan::new(plans))
    }
}
