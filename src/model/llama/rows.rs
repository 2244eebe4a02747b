//! Row-wise prefill: some rows of a prompt computed through every layer, the
//! keys and values of the others given (from a module store, a prefix cache
//! or an earlier pass). This is the one pass behind exact prefill (every row
//! computed), a prefix cache (the leading rows given), modular attention
//! reuse (the modules' rows given, rotated to where they land), selective
//! recomputation (CacheBlend: layer 0 for every row, then the rows whose
//! keys and values deviate most from the given ones) and each decoding step
//! (one new row after all the others).
//!
//! Rows carry their own position ids (gaps allowed) and attend causally by
//! row order: row `i` sees rows `0..=i`.

use candle_core::{Module, Result, Tensor};

use super::LlamaDecoder;
use super::attention::LayerKv;
use super::tensor_rows::{DeviceKv, PromptKv};
use crate::model::fused::{self, Kernels};

/// Keys (after RoPE, at each row's position) and values of every row of a
/// prompt in every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per layer.
    pub layers: Vec<LayerKv>,
    /// Values per row (`key/value heads × head width`).
    pub width: usize,
}

impl KvCache {
    /// Zeros for `rows` rows in `layers` layers, `width` values per row.
    pub fn zeros(layers: usize, rows: usize, width: usize) -> Self {
        let layer = LayerKv {
            k: vec![0.0; rows * width],
            v: vec![0.0; rows * width],
            len: rows,
        };
        Self {
            layers: vec![layer; layers],
            width,
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len)
    }

    /// Grows (zeros) or shrinks every layer to `rows` rows.
    pub fn resize(&mut self, rows: usize) {
        for layer in &mut self.layers {
            layer.k.resize(rows * self.width, 0.0);
            layer.v.resize(rows * self.width, 0.0);
            layer.len = rows;
        }
    }
}

/// CacheBlend's selective recomputation: every row runs layer 0; at layer
/// `at` the given rows whose fresh keys and values deviate most from the
/// given ones (a `fraction` of them, rounded up) join the computed rows for
/// that layer and all later ones; the other given rows keep their keys and
/// values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// The layer that picks (≥ 1).
    pub at: usize,
    /// Share of the given rows recomputed, 0–1.
    pub fraction: f64,
}

/// What a row-wise pass computes.
#[derive(Debug, Clone, Copy)]
pub struct RowPass<'a> {
    /// Token id of every row (only computed rows' ids are read).
    pub ids: &'a [u32],
    /// Position id of every row.
    pub positions: &'a [usize],
    /// Rows computed in every layer, ascending; the others' keys and values
    /// are read from the cache. The last row must be among them.
    pub computed: &'a [usize],
    /// Selective recomputation of given rows, if any.
    pub select: Option<Selection>,
    /// Computed rows whose attention maps (over all keys) are captured.
    pub capture: &'a [usize],
}

/// APE's rescaling of some rows' attention to some keys in a row-wise pass
/// (see [`fused::KeyRescale`]).
#[derive(Debug, Clone, Copy)]
pub struct RowRescale<'a> {
    /// Prompt rows whose attention is rescaled (the question's), ascending.
    pub rows: &'a [usize],
    /// One flag per prompt row: whether its key is rescaled (a cached
    /// module token's).
    pub keys: &'a [bool],
    /// Temperature T.
    pub temperature: f32,
    /// Scale S.
    pub scale: f32,
}

/// What a row-wise pass returns.
#[derive(Debug, Clone)]
pub struct RowsOutput {
    /// The last layer's output of the rows computed to the end, `[1, m, D]`.
    pub hidden: Tensor,
    /// Those rows, ascending.
    pub rows: Vec<usize>,
    /// Given rows that selective recomputation chose, ascending.
    pub selected: Vec<usize>,
    /// Captured maps: `[layer][head]`, each `capture.len() × rows` row-major.
    pub maps: Vec<Vec<Vec<f32>>>,
}

impl LlamaDecoder {
    /// Keys/values per row: key/value heads × head width.
    pub fn kv_width(&self) -> usize {
        self.config.kv_heads * self.config.head_dim()
    }

    /// An empty host cache for `rows` rows of this decoder.
    pub fn kv_cache(&self, rows: usize) -> KvCache {
        KvCache::zeros(self.layers.len(), rows, self.kv_width())
    }

    /// An empty cache for `rows` rows where this decoder's row-wise passes
    /// run: on the host for the fused CPU kernels, else on its device.
    pub fn prompt_kv(&self, rows: usize) -> Result<PromptKv> {
        if self.host_rows() {
            return Ok(PromptKv::Host(self.kv_cache(rows)));
        }
        DeviceKv::zeros(self.layers.len(), rows, self.kv_width(), &self.device)
            .map(PromptKv::Device)
    }

    /// `kv` where this decoder's row-wise passes run: as it is for the fused
    /// CPU kernels, else copied to its device.
    pub fn prompt_kv_from(&self, kv: KvCache) -> Result<PromptKv> {
        match self.host_rows() {
            true => Ok(PromptKv::Host(kv)),
            false => DeviceKv::from_host(&kv, &self.device).map(PromptKv::Device),
        }
    }

    /// Whether row-wise passes run the fused CPU kernels on host caches
    /// (the CPU default) rather than candle ops on device tensors.
    pub fn host_rows(&self) -> bool {
        self.device.is_cpu() && self.kernels == Kernels::Fused
    }

    /// Moves keys rotated for the positions `from` to the positions `to`
    /// (rows `rows` of every layer of `kv`): what makes a module encoded at
    /// one offset usable at another.
    pub fn shift_keys(
        &self,
        kv: &mut KvCache,
        rows: std::ops::Range<usize>,
        (from, to): (&[usize], &[usize]),
    ) {
        let rope = &self.layers[0].attention.rope();
        let w = kv.width;
        let heads = self.config.kv_heads;
        for layer in &mut kv.layers {
            rope.shift_rows(
                &mut layer.k[rows.start * w..rows.end * w],
                w,
                (0, heads),
                (from, to),
            );
        }
    }

    /// Runs `pass` over the rows of `kv` (which holds one slot per row: the
    /// given rows' keys and values, the computed rows' are written in): the
    /// fused CPU kernels for a host cache, candle ops on the cache's device
    /// for a device cache.
    pub fn forward_rows(&self, pass: RowPass, kv: &mut PromptKv) -> Result<RowsOutput> {
        self.run_rows(pass, kv, (None, None))
    }

    /// [`Self::forward_rows`] with the attention of `rescale.rows` to the
    /// flagged keys rescaled in every layer (APE).
    pub fn forward_rows_rescaled(
        &self,
        pass: RowPass,
        kv: &mut PromptKv,
        rescale: RowRescale,
    ) -> Result<RowsOutput> {
        if rescale.keys.len() != pass.ids.len() {
            candle_core::bail!("a rescaled pass needs one key flag per row");
        }
        self.run_rows(pass, kv, (None, Some(rescale)))
    }

    /// The probe of question-aware recomputation: runs the computed rows of
    /// `pass` (no selection) through the first `layers` layers (all when 0
    /// or more than the model has) and returns, for every row of the prompt,
    /// the attention it receives from the `pass.capture` rows, summed over
    /// those rows, every head and the layers run. Nothing is captured; the
    /// computed rows' keys and values are written into `kv` for those layers.
    pub fn probe_rows(&self, pass: RowPass, kv: &mut PromptKv, layers: usize) -> Result<Vec<f32>> {
        if pass.select.is_some() {
            candle_core::bail!("a probe runs without selective recomputation");
        }
        let layers = if layers == 0 {
            self.layers.len()
        } else {
            layers.min(self.layers.len())
        };
        let mut mass = vec![0f32; pass.ids.len()];
        self.run_rows(pass, kv, (Some((layers, &mut mass)), None))?;
        Ok(mass)
    }

    /// The pass the cache calls for: host or tensor.
    fn run_rows(
        &self,
        pass: RowPass,
        kv: &mut PromptKv,
        options: (Option<(usize, &mut Vec<f32>)>, Option<RowRescale>),
    ) -> Result<RowsOutput> {
        match kv {
            PromptKv::Host(kv) => {
                if !self.device.is_cpu() {
                    candle_core::bail!("a host cache runs on a decoder on the CPU");
                }
                self.run_rows_host(pass, kv, options)
            }
            PromptKv::Device(kv) => self.run_rows_tensor(pass, kv, options),
        }
    }

    /// The fused CPU pass of [`Self::forward_rows`], or with `probe` =
    /// (layers, mass) the probe: the captured rows' maps summed into `mass`
    /// instead of kept, stopping after `layers` layers; `rescale` as
    /// [`Self::forward_rows_rescaled`].
    fn run_rows_host(
        &self,
        pass: RowPass,
        kv: &mut KvCache,
        (mut probe, rescale): (Option<(usize, &mut Vec<f32>)>, Option<RowRescale>),
    ) -> Result<RowsOutput> {
        let n = pass.ids.len();
        check_pass(&pass, (kv.rows(), kv.layers.len()), self.layers.len())?;
        let mut active: Vec<usize> = match pass.select {
            Some(_) => (0..n).collect(),
            None => pass.computed.to_vec(),
        };
        let ids: Vec<u32> = active.iter().map(|&r| pass.ids[r]).collect();
        let input = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.forward(&input)?;
        let mut selected = Vec::new();
        let mut maps = Vec::with_capacity(self.layers.len());
        // Each active row's position, and which active rows are captured:
        // derived from `active`, which changes only at the selection layer.
        let derive = |active: &[usize]| {
            let positions: Vec<usize> = active.iter().map(|&r| pass.positions[r]).collect();
            let capture: Vec<usize> = pass
                .capture
                .iter()
                .filter_map(|r| active.binary_search(r).ok())
                .collect();
            let rescaled: Vec<bool> = active
                .iter()
                .map(|r| rescale.is_some_and(|s| s.rows.binary_search(r).is_ok()))
                .collect();
            (positions, capture, rescaled)
        };
        let (mut positions, mut capture, mut rescaled) = derive(&active);
        rayon::scope(|_| {
            for (l, layer) in self.layers.iter().enumerate() {
                if probe.as_ref().is_some_and(|(layers, _)| l >= *layers) {
                    break;
                }
                let normed = layer.attention_input(&x)?;
                let mut qkv =
                    fused::with_values(&normed, |v| layer.attention.project_rows(v, &positions))?;
                if let Some(select) = pass.select.filter(|s| s.at == l) {
                    let keep =
                        self.select_rows(&qkv, &active, &kv.layers[l], pass.computed, select);
                    qkv = keep_rows(&qkv, &keep, qkv.len() / active.len());
                    let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
                    x = x.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 1)?;
                    active = keep.iter().map(|&i| active[i]).collect();
                    selected = given_rows(&active, pass.computed);
                    (positions, capture, rescaled) = derive(&active);
                }
                let key_rescale = rescale.map(|s| fused::KeyRescale {
                    rows: &rescaled,
                    keys: s.keys,
                    temperature: s.temperature,
                    scale: s.scale,
                });
                let (context, layer_maps) = layer.attention.attend_rows(
                    &qkv,
                    &active,
                    &mut kv.layers[l],
                    (&capture, key_rescale),
                );
                let context = fused::tensor(context, &[1, active.len(), qkv_heads_width(self)])?;
                x = layer.finish(&x, &context)?;
                match probe.as_mut() {
                    Some((_, mass)) => {
                        for map in &layer_maps {
                            for row in map.chunks_exact(n) {
                                mass.iter_mut().zip(row).for_each(|(m, a)| *m += a);
                            }
                        }
                    }
                    None => maps.push(layer_maps),
                }
            }
            Ok::<(), candle_core::Error>(())
        })?;
        Ok(RowsOutput {
            hidden: x,
            rows: active,
            selected,
            maps,
        })
    }

    /// CacheBlend's pick: among the rows `active` (indices into `qkv`'s
    /// rows), keep the computed ones and the `fraction` of given rows whose
    /// fresh keys and values (in `qkv`) differ most from the given ones
    /// (squared distance). Returns indices into `active`, ascending.
    fn select_rows(
        &self,
        qkv: &[f32],
        active: &[usize],
        given: &LayerKv,
        computed: &[usize],
        select: Selection,
    ) -> Vec<usize> {
        let (h_all, _, hd) = self.layers[0].attention.dims();
        let w = self.kv_width();
        let width = qkv.len() / active.len();
        let deviation = |i: usize, r: usize| -> f32 {
            let fresh = &qkv[i * width + h_all * hd..i * width + h_all * hd + 2 * w];
            let (k, v) = (&given.k[r * w..(r + 1) * w], &given.v[r * w..(r + 1) * w]);
            fresh
                .iter()
                .zip(k.iter().chain(v))
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        };
        keep_selected(active, computed, deviation, select.fraction)
    }
}

/// The rows of `rows` that are not `computed` (the given rows a selection
/// recomputes).
pub(super) fn given_rows(rows: &[usize], computed: &[usize]) -> Vec<usize> {
    rows.iter()
        .copied()
        .filter(|r| computed.binary_search(r).is_err())
        .collect()
}

/// CacheBlend's pick among the rows `active`: the computed ones, and the
/// `fraction` of the given ones whose fresh keys and values deviate most
/// from the given ones (`deviation(i, row)`: squared distance of
/// `active[i] = row`). Indices into `active`, ascending.
pub(super) fn keep_selected(
    active: &[usize],
    computed: &[usize],
    deviation: impl Fn(usize, usize) -> f32,
    fraction: f64,
) -> Vec<usize> {
    let mut candidates: Vec<(usize, f32)> = active
        .iter()
        .enumerate()
        .filter(|(_, r)| computed.binary_search(r).is_err())
        .map(|(i, &r)| (i, deviation(i, r)))
        .collect();
    let take = (fraction.clamp(0.0, 1.0) * candidates.len() as f64).ceil() as usize;
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut keep: Vec<usize> = candidates[..take].iter().map(|&(i, _)| i).collect();
    keep.extend(
        active
            .iter()
            .enumerate()
            .filter(|(_, r)| computed.binary_search(r).is_ok())
            .map(|(i, _)| i),
    );
    keep.sort_unstable();
    keep
}

/// Width of the merged context: query heads × head width.
fn qkv_heads_width(decoder: &LlamaDecoder) -> usize {
    decoder.config.heads * decoder.config.head_dim()
}

/// The rows `keep` of a row-major matrix `width` wide.
fn keep_rows(values: &[f32], keep: &[usize], width: usize) -> Vec<f32> {
    keep.iter()
        .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
        .collect()
}

/// Fails on a pass that does not fit its cache (`slots` rows in
/// `cache_layers` layers) or the model.
pub(super) fn check_pass(
    pass: &RowPass,
    (slots, cache_layers): (usize, usize),
    layers: usize,
) -> Result<()> {
    let n = pass.ids.len();
    if n == 0 || pass.positions.len() != n || slots != n || cache_layers != layers {
        candle_core::bail!(
            "a row-wise pass needs one id, one position and one cache slot per row ({} ids, {} positions, {} slots)",
            n,
            pass.positions.len(),
            slots
        );
    }
    let ascending = |rows: &[usize]| rows.windows(2).all(|w| w[0] < w[1]);
    if !ascending(pass.computed) || pass.computed.last() != Some(&(n - 1)) {
        candle_core::bail!("the computed rows must ascend and include the last row");
    }
    if pass
        .capture
        .iter()
        .any(|r| pass.computed.binary_search(r).is_err())
    {
        candle_core::bail!("only rows computed in every layer can be captured");
    }
    if let Some(select) = pass.select
        && (select.at == 0 || select.at >= layers)
    {
        candle_core::bail!(
            "selective recomputation picks at a layer from 1 to {}, not {}",
            layers - 1,
            select.at
        );
    }
    Ok(())
}
