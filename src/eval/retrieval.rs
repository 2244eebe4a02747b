//! How good is the look-up? For each query and layer, compare the entry the
//! feature retrieves with the oracle-best entry: the same-length candidate
//! whose maps are truly most similar (mean over heads) to the query's exact
//! maps. Reported for the per-layer look-up (each layer's own input) and the
//! single look-up (the layer-0 input serves every layer, as in the paper),
//! both by exact scan, beside a random pick, and for the per-layer look-up
//! as the engine serves it (sketch scan and re-rank, or HNSW).

use serde::Serialize;

use crate::cache::similarity;
use crate::cache::{Database, LengthPolicy, SearchMethod};
use crate::data::Corpus;
use crate::model::{LayerPlan, Model, Planner};

/// Retrieval quality of one layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerRetrieval {
    /// Queries with at least one same-length candidate.
    pub queries: usize,
    /// Mean true similarity of the oracle-best candidate.
    pub oracle_similarity: f64,
    /// Per-layer look-up: share of queries retrieving the oracle-best entry.
    pub per_layer_oracle_rate: f64,
    /// Per-layer look-up: mean similarity gap to the oracle-best entry.
    pub per_layer_gap: f64,
    /// Per-layer look-up as served (sketch scan and exact re-rank, or
    /// HNSW): share retrieving the oracle-best entry.
    pub served_oracle_rate: f64,
    /// Per-layer look-up as served: mean similarity gap.
    pub served_gap: f64,
    /// Share of queries where the look-up as served finds the exact scan's entry.
    pub served_agreement: f64,
    /// Single look-up: share retrieving the oracle-best entry.
    pub single_oracle_rate: f64,
    /// Single look-up: mean similarity gap.
    pub single_gap: f64,
    /// A uniformly random candidate: mean similarity gap.
    pub random_gap: f64,
}

/// Records each layer's input and captures every map.
struct Recorder {
    heads: usize,
    inputs: Vec<candle_core::Tensor>,
}

impl Planner for Recorder {
    fn plan_layer(
        &mut self,
        _layer: usize,
        input: &candle_core::Tensor,
    ) -> candle_core::Result<LayerPlan> {
        self.inputs.push(input.clone());
        Ok(LayerPlan::capture_all(self.heads))
    }
}

/// Measures retrieval quality per layer over `corpus`.
pub fn retrieval_quality(
    model: &Model,
    db: &Database,
    corpus: &Corpus,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<LayerRetrieval>> {
    anyhow::ensure!(
        !corpus.items.is_empty(),
        "the split {} is empty",
        corpus.name
    );
    let shape = *model.shape();
    let mut out = vec![LayerRetrieval::default(); shape.layers];
    for (i, item) in corpus.items.iter().enumerate() {
        progress(i + 1, corpus.items.len());
        let tokenized = model.tokenize(&[item.text.as_str()])?;
        let s = tokenized[0].ids.len();
        let candidates = db.entries_of_length(s);
        if candidates.is_empty() {
            continue;
        }
        let mut recorder = Recorder {
            heads: shape.heads,
            inputs: Vec::new(),
        };
        let (_, exact) = model.forward(&tokenized, &mut recorder)?;
        // Each layer's feature, computed once for every way of searching.
        let features = (0..shape.layers)
            .map(|l| db.query_feature(l, &recorder.inputs[l]))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let search = |layer: usize, method: SearchMethod| -> usize {
            db.search(layer, &features[layer], s, LengthPolicy::Exact, method)
                .expect("candidates exist")
                .entry as usize
        };
        let single = search(0, SearchMethod::ExactScan);
        for (l, stats) in out.iter_mut().enumerate() {
            let truth: Vec<Vec<f32>> = exact.maps[l]
                .iter()
                .map(|m| {
                    m.as_ref()
                        .expect("captured")
                        .flatten_all()?
                        .to_vec1::<f32>()
                })
                .collect::<candle_core::Result<_>>()?;
            let mut sims = Vec::with_capacity(candidates.len());
            for &c in &candidates {
                let mut total = 0f64;
                for (h, t) in truth.iter().enumerate() {
                    total += similarity(&db.map_values(c, l, h)?, t, s) as f64;
                }
                sims.push(total / shape.heads as f64);
            }
            let (best_pos, best) =
                sims.iter().enumerate().fold(
                    (0, f64::MIN),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                );
            let sim_of = |entry: usize| {
                sims[candidates
                    .iter()
                    .position(|&c| c == entry)
                    .expect("a candidate")]
            };
            let per_layer = search(l, SearchMethod::ExactScan);
            let served = search(l, SearchMethod::Indexed);
            let is_best = |entry: usize| f64::from(u8::from(entry == candidates[best_pos]));
            stats.queries += 1;
            stats.oracle_similarity += best;
            stats.per_layer_oracle_rate += is_best(per_layer);
            stats.per_layer_gap += best - sim_of(per_layer);
            stats.served_oracle_rate += is_best(served);
            stats.served_gap += best - sim_of(served);
            stats.served_agreement += f64::from(u8::from(served == per_layer));
            stats.single_oracle_rate += is_best(single);
            stats.single_gap += best - sim_of(single);
            stats.random_gap += best - sims.iter().sum::<f64>() / sims.len() as f64;
        }
    }
    for stats in &mut out {
        let n = stats.queries.max(1) as f64;
        for v in [
            &mut stats.oracle_similarity,
            &mut stats.per_layer_oracle_rate,
            &mut stats.per_layer_gap,
            &mut stats.served_oracle_rate,
            &mut stats.served_gap,
            &mut stats.served_agreement,
            &mut stats.single_oracle_rate,
            &mut stats.single_gap,
            &mut stats.random_gap,
        ] {
            *v /= n;
        }
    }
    Ok(out)
}
