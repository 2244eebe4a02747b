//! Measuring attention reuse: map similarity and robust timing statistics.

mod similarity;
mod stats;

pub use similarity::map_similarity;
pub use stats::median;
