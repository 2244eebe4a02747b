//! The memorization database: entries, f16 maps in a memory-mapped file,
//! per-layer features, the index, the hit/miss policy, and how similar two
//! maps are.

mod build;
mod crop;
mod error;
pub mod feature;
mod head_types;
mod index;
mod manifest;
mod maps;
pub mod policy;
mod projector;
mod resident;
mod similarity;
mod sketch;
mod store;

pub use crate::storage::write_atomically;
pub use build::{BuildOptions, BuildSummary, DEFAULT_HNSW_MIN_BUCKET, build};
pub use crop::{aligned_indices, crop_map};
pub use error::DbError;
pub use feature::FeatureKind;
pub use head_types::{HeadProfile, HeadType, HeadTypes};
pub use index::{FeaturePoint, Features, Index, Neighbour, SearchMethod, SearchTimes};
pub use manifest::{FORMAT_VERSION, Manifest, ModelIdentity};
pub use policy::{LengthPolicy, Lookup, Policy};
pub use resident::ResidentMaps;
pub use similarity::{js_divergence, map_similarity, similarity};
pub use sketch::{RERANK, SKETCH_DIM, Sketches};
pub use store::{Database, Entry};
