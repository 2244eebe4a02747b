//! The database manifest: what a database holds and which model made it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::feature::FeatureKind;
use crate::fetch::sha256_file;
use crate::model::{Model, ModelShape};

/// Version of the on-disk format; a database of another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Which model a database belongs to: a database built for one model refuses
/// to serve another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// A readable name (the model directory's name).
    pub name: String,
    /// sha256 of `config.json`.
    pub config_sha256: String,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
    /// Layers, heads and sizes.
    pub shape: ModelShape,
}

impl ModelIdentity {
    /// The identity of a loaded model (its config and weights hashes).
    pub fn of(model: &Model) -> anyhow::Result<Self> {
        let (config_sha256, weights_sha256) = model.file_sha256()?;
        let name = model
            .files
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.files.dir.display().to_string());
        Ok(Self {
            name,
            config_sha256,
            weights_sha256,
            shape: *model.shape(),
        })
    }

    /// True when both describe the same weights and config.
    pub fn same_model(&self, other: &Self) -> bool {
        self.config_sha256 == other.config_sha256 && self.weights_sha256 == other.weights_sha256
    }

    /// Short description for messages: name + first hash digits.
    pub fn describe(&self) -> String {
        format!(
            "{} (weights {})",
            self.name,
            &self.weights_sha256[..12.min(self.weights_sha256.len())]
        )
    }
}

/// Size and checksum of one database file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 (hex).
    pub sha256: String,
}

impl FileRecord {
    /// Measures a file.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            bytes: std::fs::metadata(path)?.len(),
            sha256: sha256_file(path)?,
        })
    }
}

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
