//! Reading stored f16 maps out of the memory-mapped `maps.bin`, checked.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;

use super::error::DbError;
use super::store::Entry;

/// Tolerance on a stored row's sum (f16 storage rounds each value).
const ROW_SUM_TOLERANCE: f32 = 1e-2;

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
        // SAFETY: the file is opened read-only and attncache never modifies a
        // finished database in place (rebuilds write a new directory).
        let mmap = unsafe { Mmap::map(&file)? };
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

    /// The stored f16 map of `entry` (number `id`), `layer`, `head`,
    /// row-major `S × S`, borrowed from the file; every row checked to be
    /// finite and sum to 1.
    pub fn stored(&self, entry: &Entry, layer: usize, head: usize) -> Result<&[f16], DbError> {
        let s = entry.tokens;
        let start = entry.offset as usize + (layer * self.heads + head) * s * s;
        let all: &[f16] = bytemuck::cast_slice(&self.mmap[..self.len() * 2]);
        let corrupt = |detail: String| DbError::Corrupt {
            dir: self.dir.clone(),
            detail,
        };
        let stored = all.get(start..start + s * s).ok_or_else(|| {
            corrupt(format!(
                "the map of entry {} lies outside maps.bin",
                entry.id
            ))
        })?;
        let mut row_values = vec![0f32; s];
        for (r, row) in stored.chunks(s).enumerate() {
            row.convert_to_f32_slice(&mut row_values);
            let sum: f32 = row_values.iter().sum();
            if !sum.is_finite() || (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
                return Err(corrupt(format!(
                    "the map of entry {} layer {layer} head {head} row {r} sums to {sum}",
                    entry.id
                )));
            }
        }
        Ok(stored)
    }

    /// [`MapFile::stored`] as f32 values.
    pub fn values(&self, entry: &Entry, layer: usize, head: usize) -> Result<Vec<f32>, DbError> {
        Ok(self.stored(entry, layer, head)?.to_f32_vec())
    }
}
