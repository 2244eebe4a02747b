//! The row-wise pass on candle tensors, on any device: the same pass as the
//! fused CPU kernels of [`super::rows`] (exact prefill, prefix cache,
//! modular reuse, selective recomputation, the probe, APE's rescaling and
//! each decoding step) with the prompt's keys and values held as device
//! tensors. It is the CUDA path, and on the CPU device the check that both
//! implementations compute the same thing.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::LlamaDecoder;
use super::rows::{
    KvCache, RowPass, RowRescale, RowsOutput, check_pass, given_rows, keep_selected,
};

/// Keys (after RoPE) and values of every row of a prompt in every layer, as
/// `[rows, Hkv·d]` f32 tensors on one device.
#[derive(Debug, Clone)]
pub struct DeviceKv {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    rows: usize,
    width: usize,
}

impl DeviceKv {
    /// Zeros for `rows` rows in `layers` layers, `width` values per row.
    pub fn zeros(layers: usize, rows: usize, width: usize, device: &Device) -> Result<Self> {
        let zero = Tensor::zeros((rows, width), DType::F32, device)?;
        Ok(Self {
            k: vec![zero.clone(); layers],
            v: vec![zero; layers],
            rows,
            width,
        })
    }

    /// A host cache copied to `device`, one copy per layer and half.
    pub fn from_host(kv: &KvCache, device: &Device) -> Result<Self> {
        let (rows, width) = (kv.rows(), kv.width);
        let upload = |x: &[f32]| Tensor::from_slice(x, (rows, width), device);
        Ok(Self {
            k: kv
                .layers
                .iter()
                .map(|l| upload(&l.k))
                .collect::<Result<_>>()?,
            v: kv
                .layers
                .iter()
                .map(|l| upload(&l.v))
                .collect::<Result<_>>()?,
            rows,
            width,
        })
    }

    /// The cache held by `keys` and `values`, each `[layers, rows, Hkv·d]`
    /// (any float type, converted to f32).
    pub fn from_stacked(keys: &Tensor, values: &Tensor) -> Result<Self> {
        let (layers, rows, width) = keys.dims3()?;
        let split = |t: &Tensor| -> Result<Vec<Tensor>> {
            let t = t.to_dtype(DType::F32)?;
            (0..layers).map(|l| t.get(l)).collect()
        };
        Ok(Self {
            k: split(keys)?,
            v: split(values)?,
            rows,
            width,
        })
    }

    /// The same cache on the host.
    pub fn to_host(&self) -> Result<KvCache> {
        let mut host = KvCache::zeros(self.k.len(), self.rows, self.width);
        for (layer, (k, v)) in host.layers.iter_mut().zip(self.k.iter().zip(&self.v)) {
            layer.k = k.flatten_all()?.to_vec1()?;
            layer.v = v.flatten_all()?.to_vec1()?;
        }
        Ok(host)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Layers held.
    pub fn layers(&self) -> usize {
        self.k.len()
    }

    /// Grows (zeros) or shrinks every layer to `rows` rows.
    pub fn resize(&mut self, rows: usize) -> Result<()> {
        if rows == self.rows {
            return Ok(());
        }
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = if rows < self.rows {
                t.narrow(0, 0, rows)?
            } else {
                let zeros = Tensor::zeros((rows - self.rows, self.width), DType::F32, t.device())?;
                Tensor::cat(&[&*t, &zeros], 0)?
            };
        }
        self.rows = rows;
        Ok(())
    }
}

/// A prompt's keys and values, on the host (the fused CPU kernels) or as
/// device tensors (candle ops, any device). A row-wise pass runs the
/// implementation its cache calls for.
#[derive(Debug, Clone)]
pub enum PromptKv {
    /// Host vectors: the fused CPU pass.
    Host(KvCache),
    /// Device tensors: the tensor pass.
    Device(DeviceKv),
}

impl PromptKv {
    /// Rows held.
    pub fn rows(&self) -> usize {
        match self {
            PromptKv::Host(kv) => kv.rows(),
            PromptKv::Device(kv) => kv.rows(),
        }
    }

    /// Grows (zeros) or shrinks every layer to `rows` rows.
    pub fn resize(&mut self, rows: usize) -> Result<()> {
        match self {
            PromptKv::Host(kv) => {
                kv.resize(rows);
                Ok(())
            }
            PromptKv::Device(kv) => kv.resize(rows),
        }
    }

    /// The host cache (copied from the device when it lives there).
    pub fn into_host(self) -> Result<KvCache> {
        match self {
            PromptKv::Host(kv) => Ok(kv),
            PromptKv::Device(kv) => kv.to_host(),
        }
    }
}

/// The active rows' derived state in a tensor pass: recomputed whenever
/// selective recomputation changes which rows run.
struct ActiveRows {
    /// Each active row's position, `[m]` u32.
    positions: Tensor,
    /// `[m, n]` additive mask: 0 where active row `i` sees key `j ≤ row`,
    /// a large negative number elsewhere.
    mask: Tensor,
    /// `[m, n]` factor and bias of APE's rescaling, when asked.
    rescale: Option<(Tensor, Tensor)>,
    /// Captured rows, as indices into the active rows (`[c]` u32), if any.
    capture: Option<Tensor>,
    /// The active rows, `[m, width]` u32 (each row's index repeated), for
    /// writing their keys and values into the cache.
    scatter: Tensor,
}

impl ActiveRows {
    fn new(
        pass: &RowPass,
        active: &[usize],
        (rescale, width): (Option<RowRescale>, usize),
        device: &Device,
    ) -> Result<Self> {
        let (m, n) = (active.len(), pass.ids.len());
        let as_u32 = |rows: &[usize]| -> Vec<u32> { rows.iter().map(|&r| r as u32).collect() };
        let rows = Tensor::from_vec(as_u32(active), (m, 1), device)?;
        let keys = Tensor::arange(0u32, n as u32, device)?.unsqueeze(0)?;
        let seen = keys.broadcast_le(&rows)?.to_dtype(DType::F32)?;
        let mask = seen.affine(1e9, -1e9)?;
        let positions: Vec<usize> = active.iter().map(|&r| pass.positions[r]).collect();
        let positions = Tensor::from_vec(as_u32(&positions), m, device)?;
        let capture: Vec<usize> = pass
            .capture
            .iter()
            .filter_map(|r| active.binary_search(r).ok())
            .collect();
        let capture = match capture.is_empty() {
            true => None,
            false => Some(Tensor::from_vec(as_u32(&capture), capture.len(), device)?),
        };
        let rescale = match rescale {
            Some(s) => {
                let flag = |on: bool| if on { 1f32 } else { 0.0 };
                let rows: Vec<f32> = active
                    .iter()
                    .map(|r| flag(s.rows.binary_search(r).is_ok()))
                    .collect();
                let keys: Vec<f32> = s.keys.iter().map(|&k| flag(k)).collect();
                let both = Tensor::from_vec(rows, (m, 1), device)?
                    .broadcast_mul(&Tensor::from_vec(keys, (1, n), device)?)?;
                let factor = both.affine(1.0 / s.temperature as f64 - 1.0, 1.0)?;
                let bias = both.affine((s.scale as f64).ln(), 0.0)?;
                Some((factor, bias))
            }
            None => None,
        };
        let scatter = rows.broadcast_as((m, width))?.contiguous()?;
        Ok(Self {
            positions,
            mask,
            rescale,
            capture,
            scatter,
        })
    }
}

impl LlamaDecoder {
    /// The row-wise pass with candle ops on the cache's device; `probe` and
    /// `rescale` as the host pass takes them.
    pub(super) fn run_rows_tensor(
        &self,
        pass: RowPass,
        kv: &mut DeviceKv,
        (mut probe, rescale): (Option<(usize, &mut Vec<f32>)>, Option<RowRescale>),
    ) -> Result<RowsOutput> {
        let n = pass.ids.len();
        check_pass(&pass, (kv.rows(), kv.layers()), self.layers.len())?;
        let device = &self.device;
        let (heads, kv_heads, d) = self.layers[0].attention.dims();
        let group = heads / kv_heads;
        let mut active: Vec<usize> = match pass.select {
            Some(_) => (0..n).collect(),
            None => pass.computed.to_vec(),
        };
        let ids: Vec<u32> = active.iter().map(|&r| pass.ids[r]).collect();
        let mut x = self
            .embed
            .forward(&Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?)?;
        let mut rows = ActiveRows::new(&pass, &active, (rescale, kv.width), device)?;
        let mut selected = Vec::new();
        let mut maps = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            if probe.as_ref().is_some_and(|(layers, _)| l >= *layers) {
                break;
            }
            let normed = layer.attention_input(&x)?.squeeze(0)?;
            let (mut q, mut k, mut v) = layer.attention.project_tensor(&normed, &rows.positions)?;
            if let Some(select) = pass.select.filter(|s| s.at == l) {
                // Every row runs up to this layer: fresh and given rows align.
                let given = Tensor::cat(&[&kv.k[l], &kv.v[l]], 1)?;
                let deviation = (Tensor::cat(&[&k, &v], 1)? - given)?
                    .sqr()?
                    .sum(1)?
                    .to_vec1::<f32>()?;
                let keep =
                    keep_selected(&active, pass.computed, |i, _| deviation[i], select.fraction);
                let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
                let idx = Tensor::new(idx.as_slice(), device)?;
                x = x.index_select(&idx, 1)?;
                q = q.index_select(&idx, 1)?;
                k = k.index_select(&idx, 0)?;
                v = v.index_select(&idx, 0)?;
                active = keep.iter().map(|&i| active[i]).collect();
                selected = given_rows(&active, pass.computed);
                rows = ActiveRows::new(&pass, &active, (rescale, kv.width), device)?;
            }
            let m = active.len();
            kv.k[l] = kv.k[l].scatter(&rows.scatter, &k.contiguous()?, 0)?;
            kv.v[l] = kv.v[l].scatter(&rows.scatter, &v.contiguous()?, 0)?;
            // Grouped heads share their key/value head: queries `[Hkv, g·m, d]`.
            let keys = kv.k[l]
                .reshape((n, kv_heads, d))?
                .transpose(0, 1)?
                .contiguous()?;
            let values = kv.v[l]
                .reshape((n, kv_heads, d))?
                .transpose(0, 1)?
                .contiguous()?;
            let scores = q
                .reshape((kv_heads, group * m, d))?
                .matmul(&keys.t()?)?
                .reshape((kv_heads, group, m, n))?;
            let scores = match &rows.rescale {
                Some((factor, bias)) => scores.broadcast_mul(factor)?.broadcast_add(bias)?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&rows.mask)?)?;
            if let Some(capture) = &rows.capture {
                let picked = probs.index_select(capture, 2)?;
                match probe.as_mut() {
                    Some((_, mass)) => {
                        let received = picked.sum((0, 1, 2))?.to_vec1::<f32>()?;
                        mass.iter_mut().zip(received).for_each(|(m, a)| *m += a);
                    }
                    None => {
                        let picked = picked.reshape((heads, (), n))?;
                        let layer_maps = (0..heads)
                            .map(|h| picked.get(h)?.flatten_all()?.to_vec1::<f32>())
                            .collect::<Result<Vec<_>>>()?;
                        maps.push(layer_maps);
                    }
                }
            } else if probe.is_none() {
                maps.push(Vec::new());
            }
            let context = probs
                .reshape((kv_heads, group * m, n))?
                .matmul(&values)?
                .reshape((heads, m, d))?
                .transpose(0, 1)?
                .reshape((1, m, heads * d))?;
            x = layer.finish(&x, &context)?;
        }
        Ok(RowsOutput {
            hidden: x,
            rows: active,
            selected,
            maps,
        })
    }

    /// Moves keys `[layers, rows, Hkv·d]` rotated for the positions `from`
    /// to the positions `to` on their device ([`Self::shift_keys`] for a
    /// host cache).
    pub fn shift_stacked_keys(
        &self,
        keys: &Tensor,
        (from, to): (&[usize], &[usize]),
    ) -> Result<Tensor> {
        if from.iter().zip(to).all(|(f, t)| f == t) {
            return Ok(keys.clone());
        }
        let rope = self.layers[0].attention.rope();
        let (_, kv_heads, d) = self.layers[0].attention.dims();
        let (layers, n, width) = keys.dims3()?;
        let heads_first = keys
            .reshape((layers, n, kv_heads, d))?
            .transpose(1, 2)?
            .contiguous()?;
        rope.shift(&heads_first, (from, to))?
            .transpose(1, 2)?
            .reshape((layers, n, width))
    }
}
