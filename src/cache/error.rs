//! Errors of opening a database, each one line naming the problem and the fix.

use std::path::PathBuf;

/// Why a database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No manifest: not a database at all.
    #[error(
        "{0} is not an attncache database (no manifest.json): build one with `attncache build --out DIR`"
    )]
    NotADatabase(PathBuf),
    /// Built by another format version.
    #[error(
        "database {dir} has format version {found}, this attncache reads version {expected}: rebuild it with `attncache build`"
    )]
    WrongVersion {
        /// The database.
        dir: PathBuf,
        /// Its version.
        found: u32,
        /// The supported version.
        expected: u32,
    },
    /// Built for another model.
    #[error(
        "database {dir} was built for model {built_for}, not {model}: rebuild it for this model or pass the matching --model"
    )]
    WrongModel {
        /// The database.
        dir: PathBuf,
        /// The model in its manifest.
        built_for: String,
        /// The model in use.
        model: String,
    },
    /// Built from padded inputs for an unpadded model, or the reverse.
    #[error(
        "database {dir} was built from inputs {}, but this model runs inputs {}: pad the model alike (eval, calibrate, bench and run do it themselves) or rebuild the database",
        padding_note(*built),
        padding_note(*model)
    )]
    WrongPadding {
        /// The database.
        dir: PathBuf,
        /// The length its inputs were padded to.
        built: Option<usize>,
        /// The length the model pads to.
        model: Option<usize>,
    },
    /// A file is missing, truncated or fails its checksum, or holds bad values.
    #[error("database {dir} is corrupt: {detail}; rebuild it with `attncache build`")]
    Corrupt {
        /// The database.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The device refused the database's maps (out of memory, a driver error).
    #[error(
        "database {dir}'s maps could not be moved to the device: {detail}; free device memory, drop --resident or pass --device cpu"
    )]
    Device {
        /// The database.
        dir: PathBuf,
        /// The device's error.
        detail: String,
    },
}

/// "padded to N tokens" or "at their own length".
fn padding_note(padded_to: Option<usize>) -> String {
    padded_to.map_or("at their own length".into(), |n| {
        format!("padded to {n} tokens")
    })
}
