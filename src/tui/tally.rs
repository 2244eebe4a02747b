//! The corpus view's numbers: per head, over every query the dashboard ran
//! from the cache this session, the mean true similarity of its neighbour's
//! map (shadow runs) and its hit rate — the report's cacheability heat map,
//! live.

use crate::engine::{Mode, Trace};

/// Sums for one head.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct HeadSums {
    similarity: f64,
    similar_runs: usize,
    hits: usize,
    runs: usize,
}

/// Per layer × head sums over the traces seen.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTally {
    heads: Vec<Vec<HeadSums>>,
    /// Traces counted (cached and shadow runs; exact runs decide nothing).
    pub queries: usize,
}

impl HeadTally {
    /// An empty tally for a `layers × heads` model.
    pub fn new(layers: usize, heads: usize) -> Self {
        Self {
            heads: vec![vec![HeadSums::default(); heads]; layers],
            queries: 0,
        }
    }

    /// Counts one run (exact runs are skipped).
    pub fn add(&mut self, trace: &Trace) {
        if trace.mode == Mode::Exact {
            return;
        }
        self.queries += 1;
        for (row, layer) in self.heads.iter_mut().zip(&trace.layers) {
            for (sums, head) in row.iter_mut().zip(&layer.heads) {
                sums.runs += 1;
                sums.hits += usize::from(head.hit);
                if let Some(s) = head.similarity {
                    sums.similarity += s as f64;
                    sums.similar_runs += 1;
                }
            }
        }
    }

    /// Mean true similarity of head `(l, h)`'s neighbour maps (`None` before
    /// any shadow run found it a neighbour).
    pub fn similarity(&self, l: usize, h: usize) -> Option<f64> {
        let s = self.heads.get(l)?.get(h)?;
        (s.similar_runs > 0).then(|| s.similarity / s.similar_runs as f64)
    }

    /// Share of counted runs in which head `(l, h)` reused a map.
    pub fn hit_rate(&self, l: usize, h: usize) -> Option<f64> {
        let s = self.heads.get(l)?.get(h)?;
        (s.runs > 0).then(|| s.hits as f64 / s.runs as f64)
    }
}
