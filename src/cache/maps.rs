//! Reading stored f16 maps out of the memory-mapped `maps.bin`, checked.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::{Mmap, MmapOptions};

use super::error::DbError;
use super::store::Entry;
use crate::model::f16_to_f32;

/// Tolerance on a stored row's sum (f16 storage rounds each value).
const ROW_SUM_TOLERANCE: f32 = 1e-2;

/// Map files up to this size are mapped with every page present (read
/// ahead and faulted in at open, ≈ 0.1 s a GB from the page cache): a page
/// touched for the first time otherwise costs a fault of ≈ 3 µs inside the
/// timed look-up, over 30 of them for a 30-token query's 72 maps. Larger
/// files are mapped lazily.
const POPULATE_MAX_BYTES: u64 = 4 << 30;

/// The maps file of a database (entry `e` of `S` tokens holds `[L][H][S][S]`
/// f16 values from its offset).
pub struct MapFile {
    mmap: Mmap,
    heads: usize,
    /// The database directory, for error messages.
    dir: PathBuf,
}

impl MapFile {
    /// Maps `dir/maps.bin` read-only.
    pub fn open(dir: &Path, heads: usize) -> std::io::Result<Self> {
        let file = File::open(dir.join("maps.bin"))?;
        let mut options = MmapOptions::new();
        if file.metadata()?.len() <= POPULATE_MAX_BYTES {
            options.populate();
        }
        // SAFETY: the file is opened read-only and attncache never modifies a
        // finished database in place (rebuilds write a new directory).
        let mmap = unsafe { options.map(&file)? };
        Ok(Self {
            mmap,
            heads,
            dir: dir.to_path_buf(),
        })
    }

    /// Number of f16 values in the file.
    fn len(&self) -> usize {
        self.mmap.len() / 2
    }

    /// Every f16 value of the file, unchecked.
    pub fn all_values(&self) -> &[f16] {
        bytemuck::cast_slice(&self.mmap[..self.len() * 2])
    }

    /// Heads per layer.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Checks every map of `layers` layers of `entries` as
    /// [`MapFile::append_values`] does.
    pub fn check_all(&self, entries: &[Entry], layers: usize) -> Result<(), DbError> {
        let mut scratch = Vec::new();
        for entry in entries {
            for layer in 0..layers {
                for head in 0..self.heads {
                    scratch.clear();
                    self.append_values(entry, layer, head, &mut scratch)?;
                }
            }
        }
        Ok(())
    }

    /// A device failure while moving this file's maps.
    pub fn device_error(&self, e: candle_core::Error) -> DbError {
        DbError::Device {
            dir: self.dir.clone(),
            detail: e.to_string(),
        }
    }

    /// The stored f16 map of `entry`, `layer`, `head`, row-major `S × S`,
    /// borrowed from the file, unchecked.
    fn raw(&self, entry: &Entry, layer: usize, head: usize) -> Result<&[f16], DbError> {
        let s = entry.tokens;
        let start = entry.offset as usize + (layer * self.heads + head) * s * s;
        let all: &[f16] = bytemuck::cast_slice(&self.mmap[..self.len() * 2]);
        all.get(start..start + s * s)
            .ok_or_else(|| DbError::Corrupt {
                dir: self.dir.clone(),
                detail: format!("the map of entry {} lies outside maps.bin", entry.id),
            })
    }

    /// Appends the map of `entry`, `layer`, `head` to `out` as f32 values
    /// (row-major `S × S`, converted in one pass), checking every row to be
    /// finite and sum to 1.
    pub fn append_values(
        &self,
        entry: &Entry,
        layer: usize,
        head: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), DbError> {
        let stored = self.raw(entry, layer, head)?;
        let start = out.len();
        out.resize(start + stored.len(), 0.0);
        f16_to_f32(stored, &mut out[start..]);
        let s = entry.tokens;
        for (r, row) in out[start..].chunks_exact(s.max(1)).enumerate() {
            let sum = lane_sum(row);
            if !sum.is_finite() || (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
                return Err(DbError::Corrupt {
                    dir: self.dir.clone(),
                    detail: format!(
                        "the map of entry {} layer {layer} head {head} row {r} sums to {sum}",
                        entry.id
                    ),
                });
            }
        }
        Ok(())
    }

    /// The map of `entry`, `layer`, `head` as f32 values, checked (see
    /// [`MapFile::append_values`]).
    pub fn values(&self, entry: &Entry, layer: usize, head: usize) -> Result<Vec<f32>, DbError> {
        let mut values = Vec::new();
        self.append_values(entry, layer, head, &mut values)?;
        Ok(values)
    }
}

/// The sum of `values` over eight independent lanes, so the compiler can
/// vectorise it (a plain iterator sum must keep its sequential order).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}
