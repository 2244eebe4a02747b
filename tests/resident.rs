//! `--resident`: a database's maps copied into device memory give exactly
//! the maps the memory-mapped file gives (every head set, consecutive or
//! not; shorter queries fall back to the file's cropped maps), and the CLI
//! refuses it on the CPU with one line.

mod common;

use std::process::Command;

use attncache::cache::{Database, ModelIdentity};
use candle_core::Device;

fn values(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn resident_maps_equal_the_mapped_ones_bit_for_bit() {
    let (_model_dir, model) = common::tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "the movie was great",
        "a plot and a film",
        "the film is fun to watch",
    ];
    let mapped = common::tiny_database(&model, &texts, dir.path());
    let mut resident =
        Database::open(&dir.path().join("db"), &ModelIdentity::of(&model).unwrap()).unwrap();
    assert!(resident.resident().is_none());
    resident.make_resident(&Device::Cpu).unwrap();
    assert!(resident.resident().unwrap().bytes() > 0);
    let shape = *model.shape();
    for entry in 0..texts.len() {
        let tokens = mapped.entries()[entry].tokens;
        for layer in 0..shape.layers {
            let all: Vec<usize> = (0..shape.heads).collect();
            let odd: Vec<usize> = (0..shape.heads).step_by(2).collect();
            for heads in [all, odd, vec![shape.heads - 1]] {
                for query in [tokens, tokens - 1] {
                    let want = mapped
                        .maps_for(entry, layer, &heads, query, &Device::Cpu)
                        .unwrap();
                    let got = resident
                        .maps_for(entry, layer, &heads, query, &Device::Cpu)
                        .unwrap();
                    assert_eq!(got.dims(), want.dims());
                    assert_eq!(values(&got), values(&want), "entry {entry} layer {layer}");
                }
            }
        }
    }
}

#[test]
fn resident_on_the_cpu_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_model(dir.path());
    let db = dir.path().join("db");
    let out = Command::new(env!("CARGO_BIN_EXE_attncache"))
        .args([
            "--model",
            dir.path().to_str().unwrap(),
            "--resident",
            "bench",
        ])
        .args(["--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--resident") && err.contains("--device cuda"),
        "{err}"
    );
}
