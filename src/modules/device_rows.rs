//! A store's rows on a device: gathered per prompt from the memory-mapped
//! `kv.bin` and copied to the device once (one f16 copy), or kept resident
//! in device memory (`--resident`) and gathered there, so a prompt moves no
//! keys or values across PCIe.

use candle_core::{DType, Device, IndexOp, Tensor};
use half::f16;

use super::error::StoreError;
use super::layout::{Block, Layout};
use super::store::ModuleStore;

/// Every stored row of a store in device memory: `[layers, 2 (k, v),
/// rows + 1, Hkv·d]` f16, the preamble's rows first, then each module's,
/// then one row of zeros (what fresh rows gather).
#[derive(Debug)]
pub struct ResidentRows {
    rows: Tensor,
    /// First row of each module (the preamble starts at 0).
    module_base: Vec<usize>,
    /// Index of the zero row.
    zero: usize,
}

impl ResidentRows {
    /// Bytes held in device memory.
    pub fn bytes(&self) -> usize {
        self.rows.elem_count() * 2
    }
}

impl ModuleStore {
    /// Copies every stored row into `device` memory (once; later prompts
    /// gather there). Checks every value is finite first.
    pub fn make_resident(&mut self, device: &Device) -> Result<(), StoreError> {
        let (layers, w) = (self.layer_count(), self.manifest().kv_width);
        let blocks: Vec<Block> = std::iter::once(Block::Preamble)
            .chain((0..self.schema().modules.len()).map(Block::Module))
            .collect();
        let total: usize = blocks.iter().map(|&b| self.block_rows(b)).sum();
        let mut host = vec![f16::ZERO; layers * 2 * (total + 1) * w];
        let mut module_base = Vec::with_capacity(blocks.len());
        let mut at = 0;
        for &block in &blocks {
            let rows = self.block_rows(block);
            if let Block::Module(_) = block {
                module_base.push(at);
            }
            self.copy_rows(block, 0..rows, (&mut host, total + 1), at)?;
            at += rows;
        }
        self.check_finite(&host)?;
        let rows = Tensor::from_vec(host, (layers, 2, total + 1, w), device)
            .map_err(|e| self.device_error(e))?;
        self.set_resident(ResidentRows {
            rows,
            module_base,
            zero: total,
        });
        Ok(())
    }

    /// The stored rows of `layout` on `device`, keys and values `[layers,
    /// rows, Hkv·d]` f32, fresh rows zero, keys still rotated for their
    /// stored positions: gathered from resident rows when the store is
    /// resident on that device, else copied from `kv.bin` (one f16 copy).
    pub fn device_rows(
        &self,
        layout: &Layout,
        device: &Device,
    ) -> Result<(Tensor, Tensor), StoreError> {
        let n = layout.len();
        let stacked = match self
            .resident()
            .filter(|r| r.rows.device().same_device(device))
        {
            Some(resident) => {
                let index: Vec<u32> = layout
                    .stored
                    .iter()
                    .map(|s| {
                        s.map_or(resident.zero, |s| match s.block {
                            Block::Preamble => s.row,
                            Block::Module(m) => resident.module_base[m] + s.row,
                        }) as u32
                    })
                    .collect();
                Tensor::from_vec(index, n, device)
                    .and_then(|index| resident.rows.index_select(&index, 2))
                    .map_err(|e| self.device_error(e))?
            }
            None => {
                let (layers, w) = (self.layer_count(), self.manifest().kv_width);
                let mut host = vec![f16::ZERO; layers * 2 * n * w];
                for (block, rows, at) in layout.stored_copies() {
                    self.copy_rows(block, rows, (&mut host, n), at)?;
                }
                Tensor::from_vec(host, (layers, 2, n, w), device)
                    .map_err(|e| self.device_error(e))?
            }
        };
        // One reduction tells whether any gathered value is not finite.
        let split = || -> candle_core::Result<Option<(Tensor, Tensor)>> {
            let f32s = stacked.to_dtype(DType::F32)?;
            if !f32s.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Ok(None);
            }
            Ok(Some((f32s.i((.., 0))?, f32s.i((.., 1))?)))
        };
        split()
            .map_err(|e| self.device_error(e))?
            .ok_or_else(|| self.corrupt("kv.bin holds non-finite values".into()))
    }

    /// A device failure while moving this store's rows.
    fn device_error(&self, e: candle_core::Error) -> StoreError {
        StoreError::Device {
            dir: self.dir().to_path_buf(),
            detail: e.to_string(),
        }
    }
}
