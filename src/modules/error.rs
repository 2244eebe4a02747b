//! Errors of opening a module store, each one line naming the problem and
//! the fix.

use std::path::PathBuf;

/// Why a module store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No manifest, or not a module store's.
    #[error(
        "{0} is not an attncache module store: build one with `attncache --model smollm2 modules build --schema FILE --out DIR`"
    )]
    NotAStore(PathBuf),
    /// Built by another format version.
    #[error(
        "module store {dir} has format version {found}, this attncache reads version {expected}: rebuild it with `attncache modules build`"
    )]
    WrongVersion {
        /// The store.
        dir: PathBuf,
        /// Its version.
        found: u32,
        /// The supported version.
        expected: u32,
    },
    /// Built for another model.
    #[error(
        "module store {dir} was built for model {built_for}, not {model}: rebuild it for this model or pass the matching --model"
    )]
    WrongModel {
        /// The store.
        dir: PathBuf,
        /// The model in its manifest.
        built_for: String,
        /// The model in use.
        model: String,
    },
    /// Built from another schema (or an older version of this one).
    #[error(
        "module store {dir} was built from schema {built_from}, not {schema}: rebuild it with `attncache modules build --schema FILE --out DIR`"
    )]
    WrongSchema {
        /// The store.
        dir: PathBuf,
        /// The schema in its manifest.
        built_from: String,
        /// The schema given.
        schema: String,
    },
    /// A file is missing, truncated, fails its checksum or holds bad values.
    #[error("module store {dir} is corrupt: {detail}; rebuild it with `attncache modules build`")]
    Corrupt {
        /// The store.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The device refused the store's rows (out of memory, a driver error).
    #[error(
        "module store {dir} could not be moved to the device: {detail}; free device memory, drop --resident or pass --device cpu"
    )]
    Device {
        /// The store.
        dir: PathBuf,
        /// The device's error.
        detail: String,
    },
}
