//! The database manifest: what a database holds and which model made it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::feature::FeatureKind;
pub use crate::storage::{FileRecord, ModelIdentity};

/// Version of the on-disk format; a database of another version is refused
/// (2: `sketch.bin`).
pub const FORMAT_VERSION: u32 = 2;

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] at build time.
    pub format_version: u32,
    /// The model the maps came from.
    pub model: ModelIdentity,
    /// Storage type of the maps (always `f16`).
    pub map_dtype: String,
    /// The look-up feature.
    pub feature: FeatureKind,
    /// Its dimension.
    pub feature_dim: usize,
    /// Number of entries.
    pub entries: usize,
    /// The corpus it was built from.
    pub corpus: String,
    /// Entries at or above this count per (layer, length) bucket get an HNSW
    /// index; smaller buckets are scanned exactly.
    pub hnsw_min_bucket: usize,
    /// Projector databases: how well each layer's network predicts map
    /// distances on held-out pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector_fit: Option<Vec<super::projector::ProjectorFit>>,
    /// Every data file, by name.
    pub files: BTreeMap<String, FileRecord>,
    /// attncache version that built it.
    pub built_by: String,
}
