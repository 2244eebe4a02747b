//! An opened database: manifest, entries, features, index and the
//! memory-mapped f16 maps.
//!
//! Files: `manifest.json`; `entries.json` (id, text, label, token count, map
//! offset); `features.bin` (f32 LE, `[L][N][F]`); `sketch.bin` (f32 LE, the
//! look-up's projections and every entry's sketch, see `sketch`); `embeddings.bin` (f32 LE,
//! the exact sentence embedding of each entry, `[N][D]`); `index.bin` (postcard HNSW
//! buckets); `maps.bin` (f16 LE; entry `e` of `S` tokens holds `[L][H][S][S]`
//! from its offset). Opening checks the version, the model, every file's size,
//! the checksums of all files but `maps.bin` (which is checked per map as it
//! is loaded: finite, rows summing to 1), and the features for NaNs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::crop::crop_map;
use super::error::DbError;
use super::feature::{FeatureKind, pooled_feature};
use super::head_types::HeadTypes;
use super::index::{Features, HnswBucket, Index, Neighbour, SearchMethod, SearchTimes};
use super::manifest::{FORMAT_VERSION, Manifest, ModelIdentity};
use super::maps::MapFile;
use super::policy::LengthPolicy;
use super::projector::Projector;
use super::resident::ResidentMaps;
use super::sketch::Sketches;
use crate::storage::{check_files, read_json, verify_files};

/// The trained feature network of projector databases.
pub const PROJECTOR_FILE: &str = "projector.safetensors";

/// Every head's type and scores (databases built before head types lack it).
pub const HEAD_TYPES_FILE: &str = "head_types.json";

/// The look-up's first pass: projections and every entry's sketch.
pub const SKETCH_FILE: &str = "sketch.bin";

/// The data files every database holds (besides `manifest.json`).
pub const DATA_FILES: [&str; 6] = [
    "entries.json",
    "features.bin",
    SKETCH_FILE,
    "embeddings.bin",
    "index.bin",
    "maps.bin",
];

/// One stored input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry number (its position).
    pub id: u32,
    /// The text.
    pub text: String,
    /// Its label, if the corpus had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Token count.
    pub tokens: usize,
    /// Offset of its maps in `maps.bin`, in f16 values.
    pub offset: u64,
}

/// An open, checked database.
pub struct Database {
    dir: PathBuf,
    manifest: Manifest,
    entries: Vec<Entry>,
    features: Features,
    embeddings: Vec<f32>,
    index: Index,
    maps: MapFile,
    /// The trained feature network of projector databases.
    projector: Option<Projector>,
    /// Entry number by text, for identical queries.
    by_text: HashMap<String, u32>,
    /// Every head's type (`None` for databases built before head types).
    head_types: Option<HeadTypes>,
    /// Every map in device memory, once made resident.
    resident: Option<ResidentMaps>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dir", &self.dir)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database at `dir` for the model `model`, refusing one built
    /// for another model.
    pub fn open(dir: &Path, model: &ModelIdentity) -> Result<Self, DbError> {
        let db = Self::open_any(dir)?;
        if !db.manifest.model.same_model(model) {
            return Err(DbError::WrongModel {
                dir: dir.to_path_buf(),
                built_for: db.manifest.model.describe(),
                model: model.describe(),
            });
        }
        if db.manifest.model.padded_to != model.padded_to {
            return Err(DbError::WrongPadding {
                dir: dir.to_path_buf(),
                built: db.manifest.model.padded_to,
                model: model.padded_to,
            });
        }
        Ok(db)
    }

    /// The length the database's inputs were padded to (`build --pad-to`),
    /// read from its manifest alone, so a caller can pad its model to match
    /// before opening it.
    pub fn padding_of(dir: &Path) -> Result<Option<usize>, DbError> {
        Ok(read_manifest(dir)?.model.padded_to)
    }

    /// Opens and checks the database without comparing models (`db-info`).
    pub fn open_any(dir: &Path) -> Result<Self, DbError> {
        let corrupt = |detail: String| DbError::Corrupt {
            dir: dir.to_path_buf(),
            detail,
        };
        let manifest = read_manifest(dir)?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(DbError::WrongVersion {
                dir: dir.to_path_buf(),
                found: manifest.format_version,
                expected: FORMAT_VERSION,
            });
        }
        check_files(dir, &manifest.files, &DATA_FILES, &["maps.bin"]).map_err(corrupt)?;
        let entries: Vec<Entry> = read_json(dir, "entries.json").map_err(corrupt)?;
        let shape = manifest.model.shape;
        if entries.len() != manifest.entries {
            return Err(corrupt(format!(
                "{} entries listed, manifest says {}",
                entries.len(),
                manifest.entries
            )));
        }
        let maps_len = manifest.files["maps.bin"].bytes / 2;
        for (i, e) in entries.iter().enumerate() {
            let need = (shape.layers * shape.heads * e.tokens * e.tokens) as u64;
            if e.id as usize != i || e.tokens == 0 || e.offset + need > maps_len {
                return Err(corrupt(format!("entry {i} points outside maps.bin")));
            }
        }
        let features = read_f32(&dir.join("features.bin"))
            .map_err(|e| corrupt(format!("features.bin: {e}")))?;
        if features.iter().any(|x| !x.is_finite()) {
            return Err(corrupt("features.bin holds NaN or infinite values".into()));
        }
        let sketches = Sketches::from_values(
            read_f32(&dir.join(SKETCH_FILE)).map_err(|e| corrupt(format!("{SKETCH_FILE}: {e}")))?,
            shape.layers,
            entries.len(),
            manifest.feature_dim,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        let features = Features::new(features, shape.layers, entries.len(), manifest.feature_dim)
            .map_err(|e| corrupt(e.to_string()))?;
        let embeddings = read_f32(&dir.join("embeddings.bin"))
            .map_err(|e| corrupt(format!("embeddings.bin: {e}")))?;
        if embeddings.len() != entries.len() * shape.hidden
            || embeddings.iter().any(|x| !x.is_finite())
        {
            return Err(corrupt(
                "embeddings.bin has the wrong size or NaN values".into(),
            ));
        }
        let buckets: Vec<HnswBucket> = postcard::from_bytes(
            &std::fs::read(dir.join("index.bin"))
                .map_err(|e| corrupt(format!("index.bin: {e}")))?,
        )
        .map_err(|e| corrupt(format!("index.bin is malformed ({e})")))?;
        let lengths: Vec<usize> = entries.iter().map(|e| e.tokens).collect();
        let index = Index::new(&lengths, buckets, Some((sketches, shape.layers)));
        let maps = MapFile::open(dir, shape.heads)
            .map_err(|e| corrupt(format!("cannot map maps.bin ({e})")))?;
        let projector = match manifest.feature {
            FeatureKind::Pooled => None,
            FeatureKind::Projector => {
                if !manifest.files.contains_key(PROJECTOR_FILE) {
                    return Err(corrupt(format!(
                        "the manifest does not list {PROJECTOR_FILE}"
                    )));
                }
                let projector =
                    Projector::load(&dir.join(PROJECTOR_FILE), shape.layers, &Device::Cpu)
                        .map_err(|e| corrupt(format!("{PROJECTOR_FILE}: {e}")))?;
                Some(projector)
            }
        };
        let head_types = match manifest.files.contains_key(HEAD_TYPES_FILE) {
            false => None,
            true => {
                let types: HeadTypes = read_json(dir, HEAD_TYPES_FILE).map_err(corrupt)?;
                if types.heads.len() != shape.layers
                    || types.heads.iter().any(|row| row.len() != shape.heads)
                {
                    return Err(corrupt(format!(
                        "{HEAD_TYPES_FILE} does not have {} layers × {} heads",
                        shape.layers, shape.heads
                    )));
                }
                Some(types)
            }
        };
        let by_text = entries.iter().map(|e| (e.text.clone(), e.id)).collect();
        Ok(Self {
            head_types,
            projector,
            dir: dir.to_path_buf(),
            by_text,
            manifest,
            entries,
            features,
            embeddings,
            index,
            maps,
            resident: None,
        })
    }

    /// Copies every map into `device` memory (checked first), so hits on
    /// that device gather their maps there instead of copying them from the
    /// memory-mapped file (maps of longer entries, cropped for a shorter
    /// query, still come from the file).
    pub fn make_resident(&mut self, device: &Device) -> Result<(), DbError> {
        let layers = self.manifest.model.shape.layers;
        self.resident = Some(ResidentMaps::load(
            &self.maps,
            (&self.entries, layers),
            device,
        )?);
        Ok(())
    }

    /// The maps in device memory, if made resident.
    pub fn resident(&self) -> Option<&ResidentMaps> {
        self.resident.as_ref()
    }

    /// Every head's type and scores, classified when the database was built
    /// (`None` for a database built before head types: rebuild it).
    pub fn head_types(&self) -> Option<&HeadTypes> {
        self.head_types.as_ref()
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database's own policy file (`policy.json` in its directory):
    /// where `calibrate` saves without `--out` and what a command serves
    /// when no policy is named.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.json")
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The look-up feature of a query's `layer` input (`[1, S, D]`): the
    /// pooled feature, projected for projector databases.
    pub fn query_feature(&self, layer: usize, input: &Tensor) -> candle_core::Result<Vec<f32>> {
        let pooled = pooled_feature(input)?;
        match &self.projector {
            None => Ok(pooled),
            Some(p) => {
                let n = pooled.len();
                p.project(layer, &Tensor::from_vec(pooled, (1, n), &Device::Cpu)?)?
                    .flatten_all()?
                    .to_vec1()
            }
        }
    }

    /// The numbers of the entries of exactly `tokens` tokens.
    pub fn entries_of_length(&self, tokens: usize) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|e| e.tokens == tokens)
            .map(|e| e.id as usize)
            .collect()
    }

    /// The entry whose text is exactly `text`, if any.
    pub fn find_text(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// Per-layer features of all entries.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The exact sentence embedding of `entry` (computed at build time).
    pub fn embedding(&self, entry: usize) -> &[f32] {
        let d = self.manifest.model.shape.hidden;
        &self.embeddings[entry * d..(entry + 1) * d]
    }

    /// The search structure.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The entry nearest to `feature` at `layer` among those that may serve
    /// a query of `length` tokens ([`Index::search`] over this database's
    /// features).
    pub fn search(
        &self,
        layer: usize,
        feature: &[f32],
        length: usize,
        lengths: LengthPolicy,
        method: SearchMethod,
    ) -> Option<Neighbour> {
        let mut times = SearchTimes::default();
        self.search_timed(layer, feature, length, lengths, method, &mut times)
    }

    /// [`Database::search`], adding the time of each stage to `times`.
    pub fn search_timed(
        &self,
        layer: usize,
        feature: &[f32],
        length: usize,
        lengths: LengthPolicy,
        method: SearchMethod,
        times: &mut SearchTimes,
    ) -> Option<Neighbour> {
        self.index.search(
            layer,
            feature,
            length,
            lengths,
            &self.features,
            method,
            times,
        )
    }

    /// The `k` nearest, nearest first ([`Index::search_k`] over this
    /// database's features).
    pub fn search_k(
        &self,
        layer: usize,
        feature: &[f32],
        length: usize,
        lengths: LengthPolicy,
        k: usize,
    ) -> Vec<Neighbour> {
        self.index
            .search_k(layer, feature, length, lengths, &self.features, k)
    }

    /// Total size of the database files in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.manifest.files.values().map(|f| f.bytes).sum()
    }

    /// The stored f16 map of `entry`, `layer`, `head` as a row-major
    /// `S × S` f32 vector (S = the entry's length), checked.
    pub fn map_values(&self, entry: usize, layer: usize, head: usize) -> Result<Vec<f32>, DbError> {
        self.maps.values(&self.entries[entry], layer, head)
    }

    /// The map of `entry`, `layer`, `head` for a query of `query_len` tokens
    /// as a row-major `S × S` vector: as stored when the lengths match,
    /// cropped and renormalised when the entry is longer.
    pub fn map_values_for(
        &self,
        entry: usize,
        layer: usize,
        head: usize,
        query_len: usize,
    ) -> anyhow::Result<Vec<f32>> {
        let entry_len = self.entries[entry].tokens;
        anyhow::ensure!(
            entry_len >= query_len,
            "entry {entry} has {entry_len} tokens, fewer than the query's {query_len}"
        );
        let values = self.map_values(entry, layer, head)?;
        Ok(if entry_len == query_len {
            values
        } else {
            crop_map(&values, entry_len, query_len)
        })
    }

    /// [`Database::map_values_for`] of several heads of one layer as one f32
    /// tensor `[heads, S, S]` on `device` (head `heads[i]`'s map at `i`),
    /// converted and checked in one pass per head into one buffer and moved
    /// there in one copy (a GPU pays per transfer, not per byte, at these
    /// sizes).
    pub fn maps_for(
        &self,
        entry: usize,
        layer: usize,
        heads: &[usize],
        query_len: usize,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        if let Some(resident) = self.resident.as_ref().filter(|r| r.on(device))
            && self.entries[entry].tokens == query_len
        {
            return Ok(resident.gather(&self.entries[entry], layer, heads)?);
        }
        let shape = (heads.len(), query_len, query_len);
        let mut values = Vec::with_capacity(heads.len() * query_len * query_len);
        for &head in heads {
            if self.entries[entry].tokens == query_len {
                self.maps
                    .append_values(&self.entries[entry], layer, head, &mut values)?;
            } else {
                values.extend(self.map_values_for(entry, layer, head, query_len)?);
            }
        }
        Ok(Tensor::from_vec(values, shape, device)?)
    }

    /// Re-reads every file and compares it with its recorded checksum,
    /// `maps.bin` included.
    pub fn verify(&self) -> Result<(), DbError> {
        verify_files(&self.dir, &self.manifest.files).map_err(|detail| DbError::Corrupt {
            dir: self.dir.clone(),
            detail,
        })
    }
}

/// The manifest of the database at `dir` (not a database without one).
fn read_manifest(dir: &Path) -> Result<Manifest, DbError> {
    if !dir.join("manifest.json").is_file() {
        return Err(DbError::NotADatabase(dir.to_path_buf()));
    }
    read_json(dir, "manifest.json").map_err(|detail| DbError::Corrupt {
        dir: dir.to_path_buf(),
        detail,
    })
}

/// Reads a little-endian f32 file.
fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() % 4 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "length is not a multiple of 4",
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}
