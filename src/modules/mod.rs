//! Modular attention reuse (Prompt Cache, arXiv 2311.04934, and its
//! position-independent successors): a schema names reusable modules of
//! text; each module's keys and values are computed once and stored; a
//! prompt that uses modules in any subset and order loads them instead of
//! computing them, with positions assigned the schema's way or contiguously,
//! and recomputes what the cache cannot see as much as its recovery policy
//! says.
//!
//! - [`schema`]: the schema file (TOML or JSON).
//! - [`prompt`]: prompts over a schema (JSONL).
//! - [`layout`]: tokenized modules and a prompt's rows and positions.
//! - [`store`]: the module key/value store on disk.
//! - [`recovery`]: `none`, `first:K`, `select:R`, `probe:R`, `probe-modules:M`.
//! - [`prefill`]: exact, prefix-cache and modular prefill of a layout.
//! - [`workload`]: generated multi-document, passkey and few-shot workloads.

pub mod device_rows;
mod error;
pub mod layout;
pub mod prefill;
pub mod prompt;
pub mod recovery;
pub mod schema;
pub mod store;
pub mod workload;

pub use error::StoreError;
pub use layout::{EncodeOptions, Encoding, Layout, LayoutOptions, Positions, TokenizedSchema};
pub use prefill::{Decision, Prefill, Stages};
pub use prompt::{PromptSpec, load_prompts};
pub use recovery::{Recovery, Rescale, Setting};
pub use schema::Schema;
pub use store::{BuildOptions, ModuleStore, StoreSummary, build_store, decoder_of};
