//! Measuring attention reuse: map similarity and robust timing statistics.

mod similarity;
mod stats;

pub use similarity::{js_divergence, map_similarity, similarity};
pub use stats::median;
