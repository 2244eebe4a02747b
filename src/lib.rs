//! attncache: faster transformer prefill by reusing attention maps.
//!
//! - [`fetch`]: model weights and data from registry packages, checked and
//!   installed atomically.
//! - [`model`]: our own BERT forward pass with per-head attention plans
//!   (exact, capture, reuse) and per-layer timers.
//! - [`data`]: the built-in Rotten Tomatoes splits and user corpora.
//! - [`cache`]: the memorization database, features, index and policy.
//! - [`engine`]: exact / cached / shadow runs and their traces.
//! - [`eval`]: map similarity and timing statistics.
//! - [`plot`]: figures with plotters (PNG and SVG).
//! - [`tui`]: the interactive dashboard.
//! - [`cli`]: the command-line interface.
//! - [`text`]: small text helpers.

pub mod cache;
pub mod cli;
pub mod data;
pub mod engine;
pub mod eval;
pub mod fetch;
pub mod model;
pub mod plot;
pub mod text;
pub mod tui;
