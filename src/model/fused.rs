//! Fused CPU kernels for a batch of one (f32), on slices: the attention core
//! per head (QKᵀ → softmax → ·V, maps handed out only when captured, reused
//! maps read in place from their tensors, f32 or f16), residual + layer norm,
//! RMSNorm and SiLU·up, rows in parallel. QKᵀ goes through `gemm` (the crate
//! candle's CPU backend uses) on strided views, map·V through
//! `simd::map_times_values` (the same kernel for computed and reused maps,
//! so reusing an input's own maps reproduces its output exactly); heads run
//! in parallel with rayon. The projections are [`super::packed`]'s.

use candle_core::{CpuStorage, Device, Error, Layout, Result, Storage, Tensor};
use half::f16;
use rayon::prelude::*;

use super::plan::ReusedMap;
use super::simd;

/// Which implementation runs the element-wise work and the attention core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// candle ops only (any device, any batch): the reference.
    Reference,
    /// The fused CPU kernels of this module for an unpadded input on the
    /// CPU; everything else falls back to the reference.
    Fused,
}

impl Kernels {
    /// Fused on the CPU, the reference elsewhere.
    pub fn default_for(device: &Device) -> Self {
        if device.is_cpu() {
            Kernels::Fused
        } else {
            Kernels::Reference
        }
    }
}

/// Runs `f` on the contiguous f32 values of a CPU tensor, without copying.
pub fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match borrowed(&storage, layout)? {
        MapValues::F32(values) => Ok(f(values)),
        MapValues::F16(_) => Err(Error::Msg("this fused kernel reads f32 tensors".into())),
    }
}

/// The contiguous values of a CPU tensor's storage, f32 or f16, borrowed.
fn borrowed<'a>(storage: &'a Storage, layout: &Layout) -> Result<MapValues<'a>> {
    let Storage::Cpu(cpu) = storage else {
        return Err(Error::Msg("fused kernels run on the CPU only".into()));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg("fused kernels need contiguous tensors".into()))?;
    Ok(match cpu {
        CpuStorage::F32(values) => MapValues::F32(&values[start..end]),
        CpuStorage::F16(values) => MapValues::F16(&values[start..end]),
        _ => candle_core::bail!("fused kernels read f32 or f16 tensors"),
    })
}

/// A row-major matrix view: element `(r, c)` is `data[r * row_stride + offset + c]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Column offset.
    pub offset: usize,
}

/// A reused map's values, borrowed from its tensor: f32 (what a database
/// load gives), or f16 (a caller's half-precision tensor, converted four
/// rows at a time inside map·V).
#[derive(Debug, Clone, Copy)]
pub enum MapValues<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl<'a> MapValues<'a> {
    /// The `len` values from `start`; an error when they lie outside.
    fn slice(self, start: usize, len: usize) -> Result<Self> {
        let range = start..start + len;
        let outside = || Error::Msg(format!("map values {range:?} lie outside the tensor"));
        Ok(match self {
            MapValues::F32(v) => MapValues::F32(v.get(range.clone()).ok_or_else(outside)?),
            MapValues::F16(v) => MapValues::F16(v.get(range.clone()).ok_or_else(outside)?),
        })
    }
}

/// Where one head's map comes from.
#[derive(Debug, Clone, Copy)]
pub enum HeadMap<'a> {
    /// Computed from Q and K at these column offsets; captured when asked.
    Compute {
        /// Column offset of the head's queries.
        q: usize,
        /// Column offset of its keys.
        k: usize,
        /// Hand the map out.
        capture: bool,
    },
    /// A given `[queries, keys]` map.
    Reuse(MapValues<'a>),
}

/// `dst[m × n] = lhs[m × k] · rhs[k × n]` on strided views (f32, one thread).
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    debug_assert!(m == 0 || dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the views lie inside their slices (checked above in debug
    // builds, by construction in the callers), `dst` is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Sizes of one attention core call.
#[derive(Debug, Clone, Copy)]
pub struct Core {
    /// Query rows (tokens computed in this pass).
    pub queries: usize,
    /// Key rows: the queries' tokens, after any cached prefix tokens.
    pub keys: usize,
    /// Head width.
    pub d: usize,
    /// Causal (decoder) attention: query `i` sees keys `0..=i + keys − queries`.
    pub causal: bool,
    /// Trailing keys that are padding: no query sees them.
    pub padding: usize,
}

impl Core {
    /// Self-attention of `s` tokens over themselves.
    pub fn square(s: usize, d: usize, causal: bool) -> Self {
        Self {
            queries: s,
            keys: s,
            d,
            causal,
            padding: 0,
        }
    }

    /// The same call with the last `padding` keys masked for every query.
    pub fn padded(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
}

/// Adjusts query row `i`'s scores over the keys it sees before the softmax.
type ScoreAdjust<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Query rows per tile of the attention core: a tile's scores over its
/// visible keys (64 × 2,048 f32 = 512 KB at 2K tokens) stay in a core's L2
/// (64 measured faster than 16, 32 and 128 at 2K and 4K tokens).
const QUERY_TILE: usize = 64;

/// The attention of every head: returns the merged context
/// `[queries, heads·d]` and the captured maps (`[queries, keys]`, by head).
/// Head `h` reads its values at column `v_cols[h]` of `v` (several query
/// heads may share one value head).
pub fn attention(
    q: View,
    k: View,
    v: View,
    heads: &[HeadMap],
    v_cols: &[usize],
    core: Core,
) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
    let Core {
        queries: m,
        keys: n,
        d,
        causal,
        padding,
    } = core;
    let real = n - padding.min(n);
    let visible: Vec<usize> = (0..m)
        .map(|i| match causal {
            true => (i + n - m + 1).min(real),
            false => real,
        })
        .collect();
    attention_masked((q, k, v), heads, v_cols, (n, d), (&visible, &|_, _| {}))
}

/// APE's attention rescaling: the scores `s` (already scaled by 1/√d) of
/// the query rows flagged in `rows` over the keys flagged in `keys` become
/// `s / temperature + ln(scale)` — those keys' softmax weights
/// `exp(s / temperature)` times `scale` — before the softmax.
#[derive(Debug, Clone, Copy)]
pub struct KeyRescale<'a> {
    /// One flag per query row.
    pub rows: &'a [bool],
    /// One flag per key.
    pub keys: &'a [bool],
    /// T.
    pub temperature: f32,
    /// S.
    pub scale: f32,
}

/// [`attention`] for query rows that sit anywhere among the keys: query `i`
/// sees keys `0..=last_key[i]` (a causal pass over some rows of a prompt
/// whose other rows' keys and values are given), optionally rescaled.
pub fn attention_rows(
    (q, k, v): (View, View, View),
    heads: &[HeadMap],
    v_cols: &[usize],
    (keys, d): (usize, usize),
    (last_key, rescale): (&[usize], Option<KeyRescale>),
) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
    let visible: Vec<usize> = last_key.iter().map(|&last| last + 1).collect();
    let adjust = |i: usize, row: &mut [f32]| {
        if let Some(r) = rescale.filter(|r| r.rows[i]) {
            let (inv_t, ln_s) = (1.0 / r.temperature, r.scale.ln());
            for (s, _) in row.iter_mut().zip(r.keys).filter(|(_, k)| **k) {
                *s = *s * inv_t + ln_s;
            }
        }
    };
    attention_masked((q, k, v), heads, v_cols, (keys, d), (&visible, &adjust))
}

/// The attention core of every head, query row `i` seeing keys
/// `0..visible[i]` (its scores over them passed to `adjust(i, row)` before
/// the softmax). Computed heads run in tiles of [`QUERY_TILE`] query rows,
/// each over the keys its rows see and no further: a causal prefill does
/// half the products of the full square, and no `queries × keys` map is
/// materialised unless it is captured. Tiles of all heads share the threads.
fn attention_masked(
    (q, k, v): (View, View, View),
    heads: &[HeadMap],
    v_cols: &[usize],
    (n, d): (usize, usize),
    (visible, adjust): (&[usize], &ScoreAdjust<'_>),
) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
    let m = visible.len();
    // Rows that all see every key (an encoder) save nothing by tiling: one
    // tile per head, and map·V by the register-tiled kernel, faster than a
    // general product at these sizes; causal rows tile, and their map·V is
    // a general product over each tile's keys.
    let square = visible.iter().all(|&v| v == n);
    let tile = if square { m.max(1) } else { QUERY_TILE };
    let tiles = m.div_ceil(tile).max(1);
    let tasks: Vec<(usize, usize)> = (0..heads.len())
        .flat_map(|h| (0..tiles).map(move |t| (h, t)))
        .collect();
    let per_tile: Vec<(Vec<f32>, Option<Vec<f32>>)> = tasks
        .par_iter()
        .map(|&(h, t)| {
            let rows = t * tile..((t + 1) * tile).min(m);
            let seen = visible[rows.clone()].iter().copied().max().unwrap_or(0);
            let v_head = &v.data[v.offset + v_cols[h]..];
            let mut context = vec![0f32; rows.len() * d];
            // map·V of a causal tile: a general product over the `seen`
            // keys of its weights (rows `stride` apart), computed or reused
            // alike, so reusing a head's own map reproduces it bit for bit.
            let mut tile_times_values = |weights: &[f32], stride: usize| {
                if seen > 0 {
                    matmul(
                        (rows.len(), d, seen),
                        &mut context,
                        d,
                        weights,
                        (stride, 1),
                        v_head,
                        (v.row_stride, 1),
                    );
                }
            };
            let captured = match heads[h] {
                HeadMap::Compute {
                    q: qo,
                    k: ko,
                    capture,
                } => {
                    let mut scores = vec![0f32; rows.len() * seen];
                    if seen > 0 {
                        matmul(
                            (rows.len(), seen, d),
                            &mut scores,
                            seen,
                            &q.data[q.offset + rows.start * q.row_stride + qo..],
                            (q.row_stride, 1),
                            &k.data[k.offset + ko..],
                            (1, k.row_stride),
                        );
                    }
                    for (r, row) in rows.clone().zip(scores.chunks_mut(seen.max(1))) {
                        let (kept, hidden) = row.split_at_mut(visible[r]);
                        adjust(r, kept);
                        simd::softmax(kept);
                        hidden.fill(0.0);
                    }
                    match square {
                        true => {
                            let map = MapValues::F32(&scores);
                            simd::map_times_values(map, seen, v_head, v.row_stride, &mut context);
                        }
                        false => tile_times_values(&scores, seen),
                    }
                    capture.then(|| {
                        let mut map = vec![0f32; rows.len() * n];
                        for (dst, src) in map.chunks_mut(n).zip(scores.chunks(seen.max(1))) {
                            dst[..seen].copy_from_slice(&src[..seen]);
                        }
                        map
                    })
                }
                HeadMap::Reuse(map) => {
                    let tile = map
                        .slice(rows.start * n, rows.len() * n)
                        .expect("a reused map holds queries × keys values (reused_rows checks it)");
                    match (square, tile) {
                        (true, _) => {
                            simd::map_times_values(tile, n, v_head, v.row_stride, &mut context)
                        }
                        (false, MapValues::F32(values)) => tile_times_values(values, n),
                        (false, MapValues::F16(values)) => {
                            let mut converted = vec![0f32; values.len()];
                            simd::f16_to_f32(values, &mut converted);
                            tile_times_values(&converted, n);
                        }
                    }
                    None
                }
            };
            (context, captured)
        })
        .collect();
    let width = heads.len() * d;
    let mut merged = vec![0f32; m * width];
    let mut captured: Vec<Option<Vec<f32>>> = heads
        .iter()
        .map(|map| match map {
            HeadMap::Compute { capture: true, .. } => Some(Vec::with_capacity(m * n)),
            _ => None,
        })
        .collect();
    for (&(h, t), (context, map)) in tasks.iter().zip(per_tile) {
        let first = t * tile;
        for (row, values) in merged[first * width..]
            .chunks_mut(width)
            .zip(context.chunks(d))
        {
            row[h * d..(h + 1) * d].copy_from_slice(values);
        }
        if let (Some(all), Some(map)) = (captured[h].as_mut(), map) {
            all.extend_from_slice(&map);
        }
    }
    (merged, captured)
}

/// `x / sqrt(mean(x²) + eps) · weight` per row, as candle's `rms_norm`
/// computes it.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let cols = weight.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .for_each(|(dst, x)| simd::rms_norm(dst, x, weight, eps));
    out
}

/// `silu(gate) · up` per row of `[S, 2F]` rows holding gate then up.
pub fn silu_mul(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = vec![0f32; gate_up.len() / 2];
    out.par_chunks_mut(ffn)
        .zip(gate_up.par_chunks(2 * ffn))
        .for_each(|(dst, row)| {
            let (gate, up) = row.split_at(ffn);
            simd::silu_mul(dst, gate, up);
        });
    out
}

/// `LayerNorm(x + residual)` per row (rows as wide as `gamma`), rows in
/// parallel.
pub fn add_layer_norm(x: &[f32], residual: &[f32], norm: (&[f32], &[f32]), eps: f32) -> Vec<f32> {
    let cols = norm.0.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(cols)
        .zip(x.par_chunks(cols).zip(residual.par_chunks(cols)))
        .for_each(|(dst, (x, r))| simd::add_layer_norm(dst, x, r, norm, eps));
    out
}

/// Where the rows a head reuses lie: `len` values from `start` of a
/// contiguous tensor's values.
#[derive(Debug, Clone)]
pub struct ReusedRows {
    tensor: Tensor,
    start: usize,
    len: usize,
}

/// The last `rows` rows of the map given for head `h` (`[cols, cols]` or
/// `[rows, cols]`, optionally with a leading batch axis of 1, or its slice of
/// a stack): the rows of the queries computed in this pass, located without
/// a new tensor.
pub fn reused_rows(map: &ReusedMap, h: usize, rows: usize, cols: usize) -> Result<ReusedRows> {
    let (tensor, index) = map.parts();
    let found = match (index, tensor.dims()) {
        (Some(i), &[n, r, c]) if i < n => Some((i, r, c)),
        (None, &[1, r, c]) | (None, &[r, c]) => Some((0, r, c)),
        _ => None,
    };
    match found {
        Some((i, r, c)) if c == cols && (r == cols || r == rows) => Ok(ReusedRows {
            tensor: tensor.clone(),
            start: (i * r + r - rows) * c,
            len: rows * cols,
        }),
        _ => {
            let dims = map.head_map().map(|m| m.dims().to_vec());
            let shown = dims.map_or_else(|_| format!("{:?}", tensor.dims()), |d| format!("{d:?}"));
            match rows == cols {
                true => candle_core::bail!(
                    "the map given for head {h} has shape {shown}, expected [{cols}, {cols}]"
                ),
                false => candle_core::bail!(
                    "the map given for head {h} has shape {shown}, expected [{cols}, {cols}] or [{rows}, {cols}]"
                ),
            }
        }
    }
}

/// Runs `f` on the values of the given maps' rows (contiguous CPU tensors,
/// f32 or f16), borrowed from their storage without a copy.
pub fn with_maps<R>(
    maps: &[Option<ReusedRows>],
    f: impl FnOnce(&[Option<MapValues>]) -> R,
) -> Result<R> {
    let guards: Vec<_> = maps
        .iter()
        .map(|m| {
            m.as_ref()
                .map(|rows| (rows, rows.tensor.storage_and_layout()))
        })
        .collect();
    let values = guards
        .iter()
        .map(|guard| {
            guard
                .as_ref()
                .map(|(rows, (storage, layout))| {
                    borrowed(storage, layout)?.slice(rows.start, rows.len)
                })
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(f(&values))
}

/// A CPU tensor of `values`.
pub fn tensor(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_matmul_matches_a_naive_one() {
        // lhs 2×3 inside a row stride of 5 at offset 1; rhs 3×2 read transposed.
        let lhs_data: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let rhs_data: Vec<f32> = (0..12).map(|i| (i as f32) * 0.5).collect();
        let mut dst = vec![0f32; 4];
        matmul(
            (2, 2, 3),
            &mut dst,
            2,
            &lhs_data[1..],
            (5, 1),
            &rhs_data,
            (1, 4),
        );
        for r in 0..2 {
            for c in 0..2 {
                let want: f32 = (0..3)
                    .map(|t| lhs_data[1 + r * 5 + t] * rhs_data[c * 4 + t])
                    .sum();
                assert!((dst[r * 2 + c] - want).abs() < 1e-5);
            }
        }
    }

    /// The values `with_maps` hands the kernel for one reused map.
    fn rows_of(map: &ReusedMap, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let found = reused_rows(map, 0, rows, cols)?;
        with_maps(&[Some(found)], |values| match values[0] {
            Some(MapValues::F32(v)) => v.to_vec(),
            _ => panic!("an f32 map was given"),
        })
    }

    #[test]
    fn a_stacked_map_gives_the_same_rows_as_the_head_own_tensor() {
        let stack = tensor((0..48).map(|i| i as f32).collect(), &[3, 4, 4]).unwrap();
        for index in 0..3 {
            let own = ReusedMap::from(stack.get(index).unwrap());
            let stacked = ReusedMap::stacked(stack.clone(), index);
            for rows in [4, 2, 1] {
                let expected = rows_of(&own, rows, 4).unwrap();
                assert_eq!(rows_of(&stacked, rows, 4).unwrap(), expected);
                let first = (index * 4 + 4 - rows) * 4;
                assert_eq!(expected[0], first as f32, "index {index}, {rows} rows");
            }
        }
    }

    #[test]
    fn a_map_of_the_wrong_shape_or_index_is_refused() {
        let stack = tensor(vec![0.25; 32], &[2, 4, 4]).unwrap();
        let err = reused_rows(&ReusedMap::stacked(stack.clone(), 2), 5, 4, 4).unwrap_err();
        assert!(err.to_string().contains("head 5"), "{err}");
        let err = reused_rows(&ReusedMap::stacked(stack, 0), 1, 4, 3).unwrap_err();
        assert!(err.to_string().contains("expected [3, 3]"), "{err}");
        let own = tensor(vec![0.25; 12], &[3, 4]).unwrap();
        let err = reused_rows(&ReusedMap::from(own), 0, 2, 4).unwrap_err();
        assert!(err.to_string().contains("[4, 4] or [2, 4]"), "{err}");
    }
}
