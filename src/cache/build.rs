//! Building a database: run the exact model over a corpus, capture every map
//! and each layer's input feature, write everything into a temporary
//! directory beside the target, then swap it into place.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use candle_core::{Device, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::feature::{FeatureKind, pooled_feature};
use super::head_types::classify;
use super::index::{Features, Index};
use super::manifest::{FORMAT_VERSION, Manifest, ModelIdentity};
use super::maps::MapFile;
use super::projector::{Projector, ProjectorFit};
use super::similarity::similarity;
use super::sketch::Sketches;
use super::store::{DATA_FILES, Entry, HEAD_TYPES_FILE, PROJECTOR_FILE, SKETCH_FILE};
use crate::data::Corpus;
use crate::model::{LayerPlan, Model, ModelShape, Planner};
use crate::storage::{FileRecord, StagedDir};

/// Choices for a build.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// The look-up feature.
    pub feature: FeatureKind,
    /// Buckets with at least this many entries get an HNSW index.
    pub hnsw_min_bucket: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            feature: FeatureKind::Pooled,
            hnsw_min_bucket: DEFAULT_HNSW_MIN_BUCKET,
        }
    }
}

/// Bucket size from which HNSW replaces the exact scan. Measured with
/// `attncache bench-index` on the 1,536-dim pooled features (README): the
/// exact scan is as fast or faster than instant-distance's HNSW up to the
/// largest bucket we could build (4,096 entries), so HNSW is kept for
/// buckets beyond that range only.
pub const DEFAULT_HNSW_MIN_BUCKET: usize = 8192;

/// What a finished build holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// Where the database now is.
    pub dir: PathBuf,
    /// Entries stored.
    pub entries: usize,
    /// Corpus items skipped as duplicates.
    pub duplicates: usize,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Captures every map and records each layer input's feature.
struct Capture {
    heads: usize,
    features: Vec<Vec<f32>>,
}

impl Planner for Capture {
    fn plan_layer(&mut self, _layer: usize, input: &Tensor) -> candle_core::Result<LayerPlan> {
        self.features.push(pooled_feature(input)?);
        Ok(LayerPlan::capture_all(self.heads))
    }
}

/// Builds a database for `model` from `corpus` at `out`. `progress(done,
/// total)` is called after each item; setting `cancel` stops the build and
/// leaves any database already at `out` untouched.
pub fn build(
    model: &Model,
    corpus: &Corpus,
    out: &Path,
    options: BuildOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> anyhow::Result<BuildSummary> {
    let shape = *model.shape();
    let identity = ModelIdentity::of(model)?;
    let staged = StagedDir::new(out)?;
    let tmp = staged.path().to_path_buf();

    let mut maps = BufWriter::new(File::create(tmp.join("maps.bin"))?);
    let mut entries: Vec<Entry> = Vec::new();
    let mut layer_features: Vec<Vec<f32>> = vec![Vec::new(); shape.layers];
    let mut embeddings: Vec<f32> = Vec::new();
    let mut seen = HashSet::new();
    let mut offset = 0u64;
    let mut buf16: Vec<f16> = Vec::new();
    let total = corpus.items.len();
    for (done, item) in corpus.items.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            bail!(
                "build cancelled; the database at {} is unchanged",
                out.display()
            );
        }
        if !seen.insert(item.text.as_str()) {
            progress(done + 1, total);
            continue;
        }
        let tokenized = model.tokenize(&[item.text.as_str()])?;
        let mut capture = Capture {
            heads: shape.heads,
            features: Vec::new(),
        };
        let (batch, output) = model.forward(&tokenized, &mut capture)?;
        let s = tokenized[0].ids.len();
        let embedding = model.readout(&output.hidden, &batch)?;
        embeddings.extend(embedding.flatten_all()?.to_vec1::<f32>()?);
        for layer in &output.maps {
            for map in layer {
                let values = map
                    .as_ref()
                    .expect("captured")
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                buf16.resize(values.len(), f16::ZERO);
                buf16.convert_from_f32_slice(&values);
                maps.write_all(bytemuck::cast_slice(&buf16))?;
            }
        }
        for (l, f) in capture.features.into_iter().enumerate() {
            layer_features[l].extend(f);
        }
        entries.push(Entry {
            id: entries.len() as u32,
            text: item.text.clone(),
            label: item.label.clone(),
            tokens: s,
            offset,
        });
        offset += (shape.layers * shape.heads * s * s) as u64;
        progress(done + 1, total);
    }
    if entries.is_empty() {
        bail!("corpus {} yielded no entries", corpus.name);
    }
    maps.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let lengths: Vec<usize> = entries.iter().map(|e| e.tokens).collect();
    let (layer_features, projector_fit) = match options.feature {
        FeatureKind::Pooled => (layer_features, None),
        FeatureKind::Projector => {
            let (projected, fits) =
                train_projector(&tmp, &entries, &lengths, layer_features, &shape)?;
            (projected, Some(fits))
        }
    };
    let dim = options.feature.dim(shape.hidden);
    let features = Features::new(layer_features.concat(), shape.layers, entries.len(), dim)?;
    write_f32(&tmp.join("features.bin"), features.as_slice())?;
    let sketches = Sketches::build(features.as_slice(), shape.layers, entries.len(), dim)?;
    write_f32(
        &tmp.join(SKETCH_FILE),
        &sketches.values().collect::<Vec<_>>(),
    )?;
    write_f32(&tmp.join("embeddings.bin"), &embeddings)?;
    std::fs::write(tmp.join("entries.json"), serde_json::to_vec(&entries)?)?;
    let buckets = Index::build_hnsw(&lengths, &features, shape.layers, options.hnsw_min_bucket);
    std::fs::write(tmp.join("index.bin"), postcard::to_stdvec(&buckets)?)?;

    let maps_file = MapFile::open(&tmp, shape.heads)?;
    let types = classify(&maps_file, &entries, shape.layers, shape.heads)?;
    drop(maps_file);
    std::fs::write(tmp.join(HEAD_TYPES_FILE), serde_json::to_vec(&types)?)?;

    let projector_file = projector_fit.as_ref().map(|_| PROJECTOR_FILE);
    let files = FileRecord::all(
        &tmp,
        DATA_FILES
            .into_iter()
            .chain(projector_file)
            .chain([HEAD_TYPES_FILE]),
    )?;
    let bytes = files.values().map(|f| f.bytes).sum();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        model: identity,
        map_dtype: "f16".into(),
        feature: options.feature,
        feature_dim: dim,
        entries: entries.len(),
        corpus: corpus.name.clone(),
        hnsw_min_bucket: options.hnsw_min_bucket,
        projector_fit,
        files,
        built_by: format!("attncache {}", env!("CARGO_PKG_VERSION")),
    };
    std::fs::write(
        tmp.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    if cancel.load(Ordering::Relaxed) {
        bail!(
            "build cancelled; the database at {} is unchanged",
            out.display()
        );
    }
    staged.commit("an attncache database")?;
    Ok(BuildSummary {
        dir: out.to_path_buf(),
        entries: entries.len(),
        duplicates: total - entries.len(),
        bytes,
    })
}

/// Trains the per-layer projector on the maps just written to `dir`, saves
/// it there, and returns the projected features of every entry by layer.
fn train_projector(
    dir: &Path,
    entries: &[Entry],
    lengths: &[usize],
    pooled: Vec<Vec<f32>>,
    shape: &ModelShape,
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<ProjectorFit>)> {
    let maps = MapFile::open(dir, shape.heads)?;
    let distance = |layer: usize, i: usize, j: usize| -> anyhow::Result<f32> {
        let s = entries[i].tokens;
        let mut total = 0f32;
        for h in 0..shape.heads {
            let (a, b) = (
                maps.values(&entries[i], layer, h)?,
                maps.values(&entries[j], layer, h)?,
            );
            total += 1.0 - similarity(&a, &b, s);
        }
        Ok(total / shape.heads as f32)
    };
    let n = entries.len();
    let inputs = pooled
        .into_iter()
        .map(|f| {
            let dim = f.len() / n;
            Tensor::from_vec(f, (n, dim), &Device::Cpu)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let (projector, fits) = Projector::train(&inputs, lengths, &distance)?;
    projector.save(&dir.join(PROJECTOR_FILE))?;
    let projected = inputs
        .iter()
        .enumerate()
        .map(|(l, x)| projector.project(l, x)?.flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((projected, fits))
}

fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}
