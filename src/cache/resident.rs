//! A database's maps resident in device memory (`--resident`): `maps.bin`
//! copied to the device once, every row checked first, so a hit on that
//! device gathers its maps there and moves nothing across PCIe.

use candle_core::{DType, Device, Tensor};

use super::error::DbError;
use super::maps::MapFile;
use super::store::Entry;

/// Every stored map, as `maps.bin` holds them (f16), on one device.
#[derive(Debug)]
pub struct ResidentMaps {
    values: Tensor,
    heads: usize,
}

impl ResidentMaps {
    /// Checks every map of `entries` (`layers` layers; finite rows summing
    /// to 1) and copies the whole file to `device`.
    pub fn load(
        maps: &MapFile,
        (entries, layers): (&[Entry], usize),
        device: &Device,
    ) -> Result<Self, DbError> {
        maps.check_all(entries, layers)?;
        let values = Tensor::from_slice(maps.all_values(), maps.all_values().len(), device)
            .map_err(|e| maps.device_error(e))?;
        Ok(Self {
            values,
            heads: maps.heads(),
        })
    }

    /// Bytes held in device memory.
    pub fn bytes(&self) -> usize {
        self.values.elem_count() * 2
    }

    /// Whether the maps live on `device`.
    pub fn on(&self, device: &Device) -> bool {
        self.values.device().same_device(device)
    }

    /// The maps of `heads` of `layer` of `entry`, `[heads, S, S]` f32, gathered
    /// on the device (one slice when the heads are consecutive).
    pub fn gather(
        &self,
        entry: &Entry,
        layer: usize,
        heads: &[usize],
    ) -> candle_core::Result<Tensor> {
        let s = entry.tokens;
        let start = |h: usize| entry.offset as usize + (layer * self.heads + h) * s * s;
        let consecutive = heads.windows(2).all(|w| w[1] == w[0] + 1);
        let flat = match (heads.first(), consecutive) {
            (Some(&first), true) => self.values.narrow(0, start(first), heads.len() * s * s)?,
            _ => {
                let pieces = heads
                    .iter()
                    .map(|&h| self.values.narrow(0, start(h), s * s))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&pieces, 0)?
            }
        };
        flat.reshape((heads.len(), s, s))?.to_dtype(DType::F32)
    }
}
