//! Nearest-entry search per layer, bucketed by token length.
//!
//! Every (layer, length) bucket is searched by an `instant-distance` HNSW
//! index when it holds at least `hnsw_min` entries (HNSW has no incremental
//! insert: a rebuild rebuilds it), else by a scan of the entries' sketches
//! followed by an exact re-rank of the best few (see `sketch`), else (tiny
//! buckets, databases without sketches) by an exact scan. Oracle
//! measurements always use the exact scan.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use instant_distance::{Builder, HnswMap, Search};
use serde::{Deserialize, Serialize};

use super::feature::distance;
use super::policy::LengthPolicy;
use super::sketch::{RERANK, SketchBuckets, Sketches};

/// Where a search spends its time: finding candidates (the sketch scan, an
/// HNSW search, or the exact scan of a bucket without sketches) and
/// re-ranking the sketch scan's candidates by exact feature distance.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchTimes {
    /// Finding candidates.
    pub candidates: Duration,
    /// Re-ranking them.
    pub rerank: Duration,
}

/// Feature vectors of every entry for every layer, `[L][N][F]` flat.
#[derive(Debug, Clone)]
pub struct Features {
    data: Vec<f32>,
    entries: usize,
    dim: usize,
}

impl Features {
    /// Wraps flat `[L][N][F]` data.
    pub fn new(data: Vec<f32>, layers: usize, entries: usize, dim: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.len() == layers * entries * dim,
            "feature data has {} values, expected {layers} layers × {entries} entries × {dim}",
            data.len()
        );
        Ok(Self { data, entries, dim })
    }

    /// The feature of `entry` at `layer`.
    pub fn get(&self, layer: usize, entry: usize) -> &[f32] {
        let start = (layer * self.entries + entry) * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Asks the CPU to start loading the features of `entries` at `layer`
    /// into its caches, so their distances, computed next, do not wait on
    /// each cache line in turn.
    fn prefetch(&self, layer: usize, entries: &[u32]) {
        for &entry in entries {
            prefetch(self.get(layer, entry as usize));
        }
    }

    /// The flat data.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// A feature vector as an HNSW point (cosine distance of unit vectors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeaturePoint(pub Vec<f32>);

impl instant_distance::Point for FeaturePoint {
    fn distance(&self, other: &Self) -> f32 {
        distance(&self.0, &other.0)
    }
}

/// The entry found for a query and its feature distance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Neighbour {
    /// Entry number in the database.
    pub entry: u32,
    /// Cosine distance of the features, in [0, 2].
    pub distance: f32,
}

/// How a search is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMethod {
    /// HNSW where a bucket has one, else the sketch scan and exact re-rank
    /// (an exact scan of buckets of at most `RERANK` entries).
    Indexed,
    /// Exact scan everywhere (oracle measurements, comparisons).
    ExactScan,
}

/// One serialised HNSW bucket.
#[derive(Serialize, Deserialize)]
pub struct HnswBucket {
    layer: usize,
    length: usize,
    map: HnswMap<FeaturePoint, u32>,
}

/// The per-layer, per-length search structure of a database.
pub struct Index {
    /// Entry numbers by token length (shared by all layers).
    by_length: BTreeMap<usize, Vec<u32>>,
    /// HNSW maps by (layer, length), for large buckets.
    hnsw: BTreeMap<(usize, usize), HnswMap<FeaturePoint, u32>>,
    /// The sketches by (layer, length), for the others.
    sketches: Option<SketchBuckets>,
}

impl Index {
    /// Builds the HNSW buckets for every (layer, length) with at least
    /// `hnsw_min` entries.
    pub fn build_hnsw(
        lengths: &[usize],
        features: &Features,
        layers: usize,
        hnsw_min: usize,
    ) -> Vec<HnswBucket> {
        let by_length = group_by_length(lengths);
        let mut buckets = Vec::new();
        for (&length, ids) in by_length.iter().filter(|(_, ids)| ids.len() >= hnsw_min) {
            for layer in 0..layers {
                let points = ids
                    .iter()
                    .map(|&e| FeaturePoint(features.get(layer, e as usize).to_vec()))
                    .collect();
                let map = Builder::default().seed(0x5eed).build(points, ids.clone());
                buckets.push(HnswBucket { layer, length, map });
            }
        }
        buckets
    }

    /// Assembles the index from entry lengths and prebuilt HNSW buckets.
    pub fn new(
        lengths: &[usize],
        buckets: Vec<HnswBucket>,
        sketches: Option<(Sketches, usize)>,
    ) -> Self {
        let by_length = group_by_length(lengths);
        Self {
            sketches: sketches.map(|(s, layers)| s.arrange(layers, &by_length)),
            by_length,
            hnsw: buckets
                .into_iter()
                .map(|b| ((b.layer, b.length), b.map))
                .collect(),
        }
    }

    /// The per-length table of static heads: the first entry of `length`
    /// tokens, if any.
    pub fn first_of_length(&self, length: usize) -> Option<u32> {
        self.by_length.get(&length)?.first().copied()
    }

    /// Whether any entry may serve a query of `length` tokens under `lengths`.
    pub fn has_candidates(&self, length: usize, lengths: LengthPolicy) -> bool {
        self.buckets(length, lengths)
            .any(|(_, ids)| !ids.is_empty())
    }

    /// Number of entries of each token length.
    pub fn length_histogram(&self) -> BTreeMap<usize, usize> {
        self.by_length
            .iter()
            .map(|(&l, ids)| (l, ids.len()))
            .collect()
    }

    /// Number of HNSW buckets.
    pub fn hnsw_buckets(&self) -> usize {
        self.hnsw.len()
    }

    /// The nearest entry for a query of `length` tokens with feature `query`
    /// at `layer`: among same-length entries, or (crop policy) entries at
    /// least as long. `None` when no entry qualifies. Each stage's time is
    /// added to `times`.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        layer: usize,
        query: &[f32],
        length: usize,
        lengths: LengthPolicy,
        features: &Features,
        method: SearchMethod,
        times: &mut SearchTimes,
    ) -> Option<Neighbour> {
        let start = Instant::now();
        let mut rerank = Duration::ZERO;
        let mut best: Option<Neighbour> = None;
        // The query's sketch, for the sketch scan of buckets without HNSW.
        let sketched = match (method, &self.sketches) {
            (SearchMethod::Indexed, Some(sketches)) => {
                Some((sketches, sketches.project(layer, query)))
            }
            _ => None,
        };
        let exact = |e: u32| distance(query, features.get(layer, e as usize));
        for (&len, ids) in self.buckets(length, lengths) {
            let found = match (method, self.hnsw.get(&(layer, len))) {
                (SearchMethod::Indexed, Some(map)) => {
                    let mut search = Search::default();
                    map.search(&FeaturePoint(query.to_vec()), &mut search)
                        .next()
                        .map(|item| Neighbour {
                            entry: *item.value,
                            distance: item.distance,
                        })
                }
                _ => match &sketched {
                    Some((sketches, q)) if ids.len() > RERANK => {
                        let best: Vec<u32> = sketches
                            .nearest(layer, len, q)
                            .into_iter()
                            .map(|i| ids[i])
                            .collect();
                        let start = Instant::now();
                        features.prefetch(layer, &best);
                        let found = scan(&best, exact);
                        rerank += start.elapsed();
                        found
                    }
                    _ => scan(ids, exact),
                },
            };
            if let Some(n) = found
                && best.is_none_or(|b| n.distance < b.distance)
            {
                best = Some(n);
            }
        }
        times.candidates += start.elapsed().saturating_sub(rerank);
        times.rerank += rerank;
        best
    }

    /// The `k` nearest qualifying entries for a query of `length` tokens
    /// with feature `query` at `layer`, nearest first, by exact scan.
    pub fn search_k(
        &self,
        layer: usize,
        query: &[f32],
        length: usize,
        lengths: LengthPolicy,
        features: &Features,
        k: usize,
    ) -> Vec<Neighbour> {
        let mut all: Vec<Neighbour> = self
            .buckets(length, lengths)
            .flat_map(|(_, ids)| ids)
            .map(|&entry| Neighbour {
                entry,
                distance: distance(query, features.get(layer, entry as usize)),
            })
            .collect();
        all.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then(a.entry.cmp(&b.entry))
        });
        all.truncate(k);
        all
    }

    /// The (length, entries) buckets that may serve a query of `length`
    /// tokens: its own length, or (crop policy) every length at least as long.
    fn buckets(
        &self,
        length: usize,
        lengths: LengthPolicy,
    ) -> Box<dyn Iterator<Item = (&usize, &Vec<u32>)> + '_> {
        match lengths {
            LengthPolicy::Exact => Box::new(self.by_length.get_key_value(&length).into_iter()),
            LengthPolicy::Crop => Box::new(self.by_length.range(length..)),
        }
    }
}

/// The entry of `ids` with the smallest distance.
fn scan(ids: &[u32], dist: impl Fn(u32) -> f32) -> Option<Neighbour> {
    ids.iter()
        .map(|&entry| Neighbour {
            entry,
            distance: dist(entry),
        })
        .min_by(|a, b| a.distance.total_cmp(&b.distance))
}

fn group_by_length(lengths: &[usize]) -> BTreeMap<usize, Vec<u32>> {
    let mut by_length: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (e, &l) in lengths.iter().enumerate() {
        by_length.entry(l).or_default().push(e as u32);
    }
    by_length
}

/// Asks the CPU to start loading `values` into its caches (a hint: no
/// effect off x86-64).
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: prefetching is a hint that never faults or writes; the
        // address lies inside `values`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Features of `n` entries in 1 layer, dim 3, lengths alternating 5/7.
    fn sample(n: usize) -> (Vec<usize>, Features) {
        let mut data = Vec::new();
        for i in 0..n {
            let a = i as f32 * 0.37;
            data.extend(unit(&[a.cos(), a.sin(), 0.3]));
        }
        let lengths = (0..n).map(|i| if i % 2 == 0 { 5 } else { 7 }).collect();
        (lengths, Features::new(data, 1, n, 3).unwrap())
    }

    #[test]
    fn exact_length_search_stays_in_its_bucket_and_finds_itself() {
        let (lengths, features) = sample(40);
        let index = Index::new(&lengths, Vec::new(), None);
        for (e, &len) in lengths.iter().enumerate() {
            let q = features.get(0, e).to_vec();
            let n = index
                .search(
                    0,
                    &q,
                    len,
                    LengthPolicy::Exact,
                    &features,
                    SearchMethod::ExactScan,
                    &mut SearchTimes::default(),
                )
                .unwrap();
            assert_eq!(n.entry as usize, e);
            assert!(n.distance.abs() < 1e-6);
        }
        assert!(
            index
                .search(
                    0,
                    features.get(0, 0),
                    6,
                    LengthPolicy::Exact,
                    &features,
                    SearchMethod::ExactScan,
                    &mut SearchTimes::default(),
                )
                .is_none()
        );
        // Crop: a length-6 query may use the length-7 entries only.
        let n = index
            .search(
                0,
                features.get(0, 0),
                6,
                LengthPolicy::Crop,
                &features,
                SearchMethod::ExactScan,
                &mut SearchTimes::default(),
            )
            .unwrap();
        assert_eq!(lengths[n.entry as usize], 7);
    }

    #[test]
    fn the_k_nearest_start_with_the_nearest_and_are_sorted() {
        let (lengths, features) = sample(40);
        let index = Index::new(&lengths, Vec::new(), None);
        let q = features.get(0, 6).to_vec();
        let near = index.search_k(0, &q, 5, LengthPolicy::Exact, &features, 4);
        assert_eq!(near.len(), 4);
        assert_eq!(near[0].entry, 6);
        assert!(near.windows(2).all(|w| w[0].distance <= w[1].distance));
        assert!(near.iter().all(|n| lengths[n.entry as usize] == 5));
        let one = index
            .search(
                0,
                &q,
                5,
                LengthPolicy::Exact,
                &features,
                SearchMethod::ExactScan,
                &mut SearchTimes::default(),
            )
            .unwrap();
        assert_eq!(one, near[0]);
        assert!(
            index
                .search_k(0, &q, 6, LengthPolicy::Exact, &features, 4)
                .is_empty()
        );
    }

    #[test]
    fn hnsw_agrees_with_the_exact_scan() {
        let (lengths, features) = sample(400);
        let buckets = Index::build_hnsw(&lengths, &features, 1, 100);
        assert_eq!(buckets.len(), 2);
        let bytes = postcard::to_stdvec(&buckets).unwrap();
        let buckets: Vec<HnswBucket> = postcard::from_bytes(&bytes).unwrap();
        let index = Index::new(&lengths, buckets, None);
        assert_eq!(index.hnsw_buckets(), 2);
        let mut agree = 0;
        for i in 0..50 {
            let a = i as f32 * 0.91 + 0.05;
            let q = unit(&[a.cos(), a.sin(), 0.3]);
            let exact = index
                .search(
                    0,
                    &q,
                    5,
                    LengthPolicy::Exact,
                    &features,
                    SearchMethod::ExactScan,
                    &mut SearchTimes::default(),
                )
                .unwrap();
            let hnsw = index
                .search(
                    0,
                    &q,
                    5,
                    LengthPolicy::Exact,
                    &features,
                    SearchMethod::Indexed,
                    &mut SearchTimes::default(),
                )
                .unwrap();
            assert!(hnsw.distance >= exact.distance - 1e-6);
            agree += usize::from(hnsw.entry == exact.entry);
        }
        assert!(
            agree >= 45,
            "HNSW found the exact neighbour in only {agree} of 50 queries"
        );
    }

    /// Unit features of dimension `dim` spread over a sphere (a seeded
    /// draw; positive values, as pooled hidden states share a direction).
    fn spread(n: usize, dim: usize) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut data = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(0.0..1.0)).collect();
            data.extend(unit(&v));
        }
        data
    }

    #[test]
    fn the_sketch_scan_finds_the_exact_scans_entry_for_identical_and_near_queries() {
        let (n, dim, layers) = (300, 192, 2);
        let data: Vec<f32> = (0..layers).flat_map(|_| spread(n, dim)).collect();
        let sketches = Sketches::build(&data, layers, n, dim).unwrap();
        let features = Features::new(data, layers, n, dim).unwrap();
        let lengths = vec![9; n];
        let index = Index::new(&lengths, Vec::new(), Some((sketches, layers)));
        let search = |layer: usize, q: &[f32], method| {
            index
                .search(
                    layer,
                    q,
                    9,
                    LengthPolicy::Exact,
                    &features,
                    method,
                    &mut SearchTimes::default(),
                )
                .unwrap()
        };
        let mut near_agree = 0;
        for e in 0..n {
            let layer = e % layers;
            // Identical: itself, at distance 0.
            let q = features.get(layer, e).to_vec();
            let found = search(layer, &q, SearchMethod::Indexed);
            assert_eq!(found.entry as usize, e);
            assert!(found.distance < 1e-5);
            // Near-identical: a small perturbation finds what the exact scan finds.
            let noisy: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, x)| x + 0.01 * (((i * 31 + e * 17) % 13) as f32 / 13.0 - 0.5))
                .collect();
            let noisy = unit(&noisy);
            let exact = search(layer, &noisy, SearchMethod::ExactScan);
            let sketched = search(layer, &noisy, SearchMethod::Indexed);
            assert!(sketched.distance >= exact.distance - 1e-6);
            near_agree += usize::from(sketched.entry == exact.entry);
        }
        assert_eq!(near_agree, n, "the sketch scan missed the exact entry");
    }
}
