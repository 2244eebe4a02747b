//! The discipline every on-disk store of attncache shares (the map database
//! in [`crate::cache`], the module K/V store in [`crate::modules`]): which
//! model made it, a manifest listing every file with its size and sha256,
//! files written into a hidden temporary directory beside the target and
//! swapped into place only when complete (the old store removed only once
//! the new one is in place), and the checks an opened store must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fetch::sha256_file;
use crate::model::{Model, ModelShape};

/// Which model a store belongs to: a store built for one model refuses to
/// serve another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// A readable name (the model directory's name).
    pub name: String,
    /// sha256 of `config.json`.
    pub config_sha256: String,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
    /// Layers, heads and sizes.
    pub shape: ModelShape,
    /// The length every input was padded to (the AttnCache paper's setting,
    /// `build --pad-to`); absent when inputs run at their own length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padded_to: Option<usize>,
}

impl ModelIdentity {
    /// The identity of a loaded model (its config and weights hashes).
    pub fn of(model: &Model) -> anyhow::Result<Self> {
        let (config_sha256, weights_sha256) = model.file_sha256()?;
        let name = model
            .files
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.files.dir.display().to_string());
        Ok(Self {
            name,
            config_sha256,
            weights_sha256,
            shape: *model.shape(),
            padded_to: model.padded_to(),
        })
    }

    /// True when both describe the same weights and config.
    pub fn same_model(&self, other: &Self) -> bool {
        self.config_sha256 == other.config_sha256 && self.weights_sha256 == other.weights_sha256
    }

    /// Short description for messages: name + first hash digits.
    pub fn describe(&self) -> String {
        format!(
            "{} (weights {})",
            self.name,
            &self.weights_sha256[..12.min(self.weights_sha256.len())]
        )
    }
}

/// Size and checksum of one stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 (hex).
    pub sha256: String,
}

impl FileRecord {
    /// Measures a file.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            bytes: std::fs::metadata(path)?.len(),
            sha256: sha256_file(path)?,
        })
    }

    /// Records every file `names` of `dir`.
    pub fn all<'a>(
        dir: &Path,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::io::Result<BTreeMap<String, FileRecord>> {
        names
            .into_iter()
            .map(|name| Ok((name.to_string(), FileRecord::of(&dir.join(name))?)))
            .collect()
    }
}

/// Checks that every file `files` lists is in `dir` with its recorded size
/// and (except the names in `size_only`, checked as they are read) its
/// checksum, and that every name in `required` is listed. The error is the
/// detail of what is wrong, for the store's own "corrupt" message.
pub fn check_files(
    dir: &Path,
    files: &BTreeMap<String, FileRecord>,
    required: &[&str],
    size_only: &[&str],
) -> Result<(), String> {
    for (name, record) in files {
        let path = dir.join(name);
        let actual = std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|_| format!("{name} is missing"))?;
        if actual != record.bytes {
            return Err(format!(
                "{name} has {actual} bytes, expected {}",
                record.bytes
            ));
        }
        if !size_only.contains(&name.as_str()) {
            let sha = sha256_file(&path).map_err(|e| format!("cannot read {name} ({e})"))?;
            if sha != record.sha256 {
                return Err(format!("{name} fails its checksum"));
            }
        }
    }
    match required.iter().find(|name| !files.contains_key(**name)) {
        Some(name) => Err(format!("the manifest does not list {name}")),
        None => Ok(()),
    }
}

/// Reads and parses a store's JSON file `name`; the error is the detail of
/// what is wrong, for the store's own "corrupt" message.
pub fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<T, String> {
    let bytes = std::fs::read(dir.join(name)).map_err(|e| format!("cannot read {name} ({e})"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{name} is malformed ({e})"))
}

/// Re-reads every file and compares it with its record, the large ones
/// included: the detail of the first mismatch.
pub fn verify_files(dir: &Path, files: &BTreeMap<String, FileRecord>) -> Result<(), String> {
    for (name, record) in files {
        let actual =
            FileRecord::of(&dir.join(name)).map_err(|e| format!("cannot read {name} ({e})"))?;
        if &actual != record {
            return Err(format!("{name} fails its checksum"));
        }
    }
    Ok(())
}

/// A store being written: a hidden directory beside its target, removed
/// when dropped unless [`StagedDir::commit`] moved it into place.
#[derive(Debug)]
pub struct StagedDir {
    path: PathBuf,
    target: PathBuf,
}

impl StagedDir {
    /// A new empty staging directory for the store at `target`.
    pub fn new(target: &Path) -> anyhow::Result<Self> {
        let path = sibling(target, "building")?;
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            path,
            target: target.to_path_buf(),
        })
    }

    /// Where the files go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the target by the staged directory: an existing store is
    /// moved aside first and removed only once the new one is in place; a
    /// non-empty directory that is no store (no `manifest.json`) is refused,
    /// naming `kind` (e.g. "an attncache database").
    pub fn commit(self, kind: &str) -> anyhow::Result<()> {
        let (new, out) = (&self.path, &self.target);
        let moved = |e| {
            anyhow::Error::new(e).context(format!("cannot move the new store to {}", out.display()))
        };
        if out.exists() {
            if !out.join("manifest.json").is_file() && std::fs::read_dir(out)?.next().is_some() {
                bail!(
                    "{} exists and is not {kind}: choose another --out",
                    out.display()
                );
            }
            let old = sibling(out, "old")?;
            std::fs::rename(out, &old)
                .with_context(|| format!("cannot move {} aside", out.display()))?;
            std::fs::rename(new, out).map_err(moved)?;
            std::fs::remove_dir_all(&old).ok();
        } else {
            std::fs::rename(new, out).map_err(moved)?;
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A hidden path next to `out`: `.NAME.WHAT-PID`.
fn sibling(out: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {} has no directory name", out.display()))?
        .to_string_lossy();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(parent.join(format!(".{name}.{what}-{}", std::process::id())))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// never see a partial file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = sibling(path, "tmp")?;
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
