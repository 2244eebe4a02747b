//! attncache: faster transformer prefill by reusing attention maps.
//!
//! - [`fetch`]: model weights and data from registry packages, checked and
//!   installed atomically.
//! - [`model`]: our own BERT forward pass with per-head attention plans
//!   (exact, capture, reuse) and per-layer timers.
//! - [`eval`]: map similarity and timing statistics.
//! - [`cli`]: the command-line interface.

pub mod cli;
pub mod eval;
pub mod fetch;
pub mod model;
