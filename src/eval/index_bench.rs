//! Exact scan vs sketch scan with exact re-rank vs HNSW on real features:
//! search time and recall by bucket size, to choose the bucket size from
//! which the index pays.

use std::time::Instant;

use instant_distance::{Builder, Search};
use serde::Serialize;

use super::stats::median;
use crate::cache::feature::distance;
use crate::cache::{
    Database, FeaturePoint, Features, Index, LengthPolicy, SearchMethod, SearchTimes, Sketches,
};

/// One bucket size.
#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchRow {
    /// Entries in the bucket.
    pub bucket: usize,
    /// Median exact-scan time per query, µs.
    pub scan_us: f64,
    /// Median sketch-scan time per query (projection, scan and exact
    /// re-rank of the best few), µs.
    pub sketch_us: f64,
    /// Share of queries where the sketch scan returns the exact nearest entry.
    pub sketch_recall_at_1: f64,
    /// Median HNSW time per query, µs.
    pub hnsw_us: f64,
    /// Share of queries where HNSW returns the exact nearest entry.
    pub recall_at_1: f64,
    /// HNSW build time, ms.
    pub build_ms: f64,
}

/// Uses the layer-0 features of the database's entries (all lengths pooled
/// into one bucket): the last `queries` entries query buckets made of the
/// first `n` entries for each `n` in `sizes` that fits.
pub fn index_bench(db: &Database, sizes: &[usize], queries: usize) -> Vec<IndexBenchRow> {
    let total = db.entries().len();
    let features = db.features();
    let query_ids: Vec<usize> = (total.saturating_sub(queries)..total).collect();
    let pool = total - query_ids.len();
    let dim = db.manifest().feature_dim;
    sizes
        .iter()
        .copied()
        .filter(|&n| n <= pool && n > 0)
        .map(|n| {
            let points: Vec<FeaturePoint> = (0..n)
                .map(|e| FeaturePoint(features.get(0, e).to_vec()))
                .collect();
            let start = Instant::now();
            let map = Builder::default()
                .seed(0x5eed)
                .build(points, (0..n as u32).collect::<Vec<_>>());
            let build_ms = start.elapsed().as_secs_f64() * 1e3;
            // The bucket as a one-length, one-layer database with sketches.
            let pool = Features::new(features.as_slice()[..n * dim].to_vec(), 1, n, dim)
                .expect("sized from the database");
            let sketches =
                Sketches::build(pool.as_slice(), 1, n, dim).expect("a database's features");
            let sketched = Index::new(&vec![1; n], Vec::new(), Some((sketches, 1)));
            let (mut scan, mut hnsw, mut sketch) = (Vec::new(), Vec::new(), Vec::new());
            let (mut agree, mut sketch_agree) = (0usize, 0usize);
            for &q in &query_ids {
                let query = features.get(0, q);
                let start = Instant::now();
                let exact = (0..n)
                    .map(|e| (e as u32, distance(query, features.get(0, e))))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(e, _)| e);
                scan.push(start.elapsed().as_secs_f64() * 1e6);
                let start = Instant::now();
                let found = sketched
                    .search(
                        0,
                        query,
                        1,
                        LengthPolicy::Exact,
                        &pool,
                        SearchMethod::Indexed,
                        &mut SearchTimes::default(),
                    )
                    .map(|n| n.entry);
                sketch.push(start.elapsed().as_secs_f64() * 1e6);
                sketch_agree += usize::from(found == exact);
                let start = Instant::now();
                let mut search = Search::default();
                let found = map
                    .search(&FeaturePoint(query.to_vec()), &mut search)
                    .next()
                    .map(|item| *item.value);
                hnsw.push(start.elapsed().as_secs_f64() * 1e6);
                agree += usize::from(found == exact);
            }
            IndexBenchRow {
                bucket: n,
                scan_us: median(&scan).unwrap_or(f64::NAN),
                sketch_us: median(&sketch).unwrap_or(f64::NAN),
                sketch_recall_at_1: sketch_agree as f64 / query_ids.len().max(1) as f64,
                hnsw_us: median(&hnsw).unwrap_or(f64::NAN),
                recall_at_1: agree as f64 / query_ids.len().max(1) as f64,
                build_ms,
            }
        })
        .collect()
}
