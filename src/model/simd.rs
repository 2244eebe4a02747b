//! Element-wise kernels of the fused CPU path, written so the compiler
//! vectorises them (lane-wise accumulators, branch-free polynomial `exp` and
//! `erf`) and compiled per instruction set (AVX-512, AVX2 + FMA, baseline),
//! chosen at run time by `multiversion`.
//!
//! `exp` is the Cephes single-precision range reduction and polynomial
//! (relative error ~2e-7); `erf` is Abramowitz & Stegun 7.1.26 (absolute
//! error 1.5e-7, under 5e-7 with f32 rounding). Both are far inside the fused path's 1e-5 agreement with
//! candle's reference ops.

use half::f16;
use half::slice::HalfFloatSliceExt;
use multiversion::multiversion;

use super::fused::MapValues;

/// Independent accumulators per reduction (one AVX-512 register of f32).
const LANES: usize = 16;

/// `e^x`, 0 below the smallest normal result.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n · ln 2` is exact in the high part.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const MIN: f32 = -87.336_55;
    const MAX: f32 = 88.0;
    let clamped = x.clamp(MIN, MAX);
    let n = (clamped * LOG2_E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = 1.0 + r + r * r * p;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < MIN { 0.0 } else { y * scale }
}

/// The error function.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// `gelu_erf` in place: `x · (1 + erf(x / √2)) / 2`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub fn gelu_erf(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of one row in place (the maximum subtracted first, as candle's
/// `softmax_last_dim`; entries of −∞ become 0).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub fn softmax(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / (sum + sums.iter().sum::<f32>());
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `LayerNorm(x + residual)` of one row into `dst`:
/// `(v − mean) / √(var + eps) · gamma + beta` with `v = x + residual`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_layer_norm(
    dst: &mut [f32],
    x: &[f32],
    residual: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
) {
    let cols = dst.len();
    let (mut sums, mut squares) = ([0f32; LANES], [0f32; LANES]);
    for ((d, x), r) in dst
        .chunks_mut(LANES)
        .zip(x.chunks(LANES))
        .zip(residual.chunks(LANES))
    {
        for (i, ((d, x), r)) in d.iter_mut().zip(x).zip(r).enumerate() {
            let v = x + r;
            *d = v;
            sums[i] += v;
            squares[i] += v * v;
        }
    }
    let mean = sums.iter().sum::<f32>() / cols as f32;
    let var = squares.iter().sum::<f32>() / cols as f32 - mean * mean;
    let inv_std = 1.0 / (var + eps).sqrt();
    for ((d, g), b) in dst.iter_mut().zip(gamma).zip(beta) {
        *d = (*d - mean) * inv_std * g + b;
    }
}

/// `x / √(mean(x²) + eps) · weight` of one row into `dst`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub fn rms_norm(dst: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let mut squares = [0f32; LANES];
    for chunk in x.chunks(LANES) {
        for (s, v) in squares.iter_mut().zip(chunk) {
            *s += v * v;
        }
    }
    let scale = 1.0 / (squares.iter().sum::<f32>() / x.len() as f32 + eps).sqrt();
    for ((d, v), w) in dst.iter_mut().zip(x).zip(weight) {
        *d = v * scale * w;
    }
}

/// `silu(gate) · up` into `dst`: `gate / (1 + e^−gate) · up`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub fn silu_mul(dst: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((d, g), u) in dst.iter_mut().zip(gate).zip(up) {
        *d = g / (1.0 + exp(-g)) * u;
    }
}

/// Converts `src` to f32 into `dst` (the shorter length of the two): eight
/// values per F16C instruction where the CPU has it. `half`'s slice
/// conversion calls a function per eight values, which costs more than the
/// conversion at the lengths of a map row.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX and F16C (checked just above).
        unsafe { f16_to_f32_f16c(src, dst) };
        return;
    }
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// [`f16_to_f32`] with F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let mut chunks = src.chunks_exact(8);
    let mut out = dst.chunks_exact_mut(8);
    for (s, d) in (&mut chunks).zip(&mut out) {
        // SAFETY: `s` holds 8 f16 (16 bytes) and `d` 8 f32 (32 bytes);
        // both accesses are unaligned loads and stores.
        unsafe {
            let halves = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(halves));
        }
    }
    for (s, d) in chunks.remainder().iter().zip(out.into_remainder()) {
        *d = s.to_f32();
    }
}

/// Query rows per register tile of [`map_times_values`].
const TILE_ROWS: usize = 4;

/// `out = map · V`: `map` is `rows × cols` (`rows` = `out.len() / d`), value
/// row `j` is `v[j · stride..][..d]`, `out` is `rows × d`. Four query rows at
/// a time share each value row they load; an f16 map is converted four rows
/// at a time into a buffer that stays in L1, never as a whole.
#[multiversion(targets("x86_64+avx512f+avx2+fma+f16c", "x86_64+avx2+fma+f16c"))]
pub fn map_times_values(map: MapValues, cols: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    let len = match map {
        MapValues::F32(m) => m.len(),
        MapValues::F16(m) => m.len(),
    };
    let rows = len / cols.max(1);
    if rows == 0 {
        return;
    }
    let d = out.len() / rows;
    let mut buffer = Vec::new();
    for (t, out_tile) in out.chunks_mut(TILE_ROWS * d).enumerate() {
        let span = t * TILE_ROWS * cols..(t * TILE_ROWS * cols + out_tile.len() / d * cols);
        let weights: &[f32] = match map {
            MapValues::F32(m) => &m[span],
            MapValues::F16(m) => {
                buffer.resize(span.len(), 0.0);
                f16_to_f32(&m[span], &mut buffer);
                &buffer
            }
        };
        match (d, out_tile.len() / d) {
            (32, TILE_ROWS) => tile::<32, TILE_ROWS>(weights, cols, v, stride, out_tile),
            (64, TILE_ROWS) => tile::<64, TILE_ROWS>(weights, cols, v, stride, out_tile),
            _ => tile_any(weights, cols, v, stride, out_tile),
        }
    }
}

/// [`map_times_values`] for `R` query rows of width `D`, the sums in registers.
#[inline(always)]
fn tile<const D: usize, const R: usize>(
    weights: &[f32],
    cols: usize,
    v: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let mut sums = [[0f32; D]; R];
    for j in 0..cols {
        let row = &v[j * stride..j * stride + D];
        for (r, sum) in sums.iter_mut().enumerate() {
            let w = weights[r * cols + j];
            for (s, x) in sum.iter_mut().zip(row) {
                *s += w * x;
            }
        }
    }
    out.copy_from_slice(sums.as_flattened());
}

/// [`tile`] for any width and row count.
#[inline(always)]
fn tile_any(weights: &[f32], cols: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    let d = out.len() / (weights.len() / cols);
    out.fill(0.0);
    for (w_row, out_row) in weights.chunks(cols).zip(out.chunks_mut(d)) {
        for (j, &w) in w_row.iter().enumerate() {
            for (s, x) in out_row.iter_mut().zip(&v[j * stride..j * stride + d]) {
                *s += w * x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        for i in -2000..=800 {
            let x = i as f32 * 0.11;
            let (got, want) = (exp(x), x.exp());
            let tolerance = 4e-7 * want + f32::MIN_POSITIVE;
            assert!(
                (got - want).abs() <= tolerance,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn erf_matches_candle_to_5e7() {
        for i in -800..=800 {
            let x = i as f32 * 0.01;
            let want = candle_core::cpu::erf::erf_f32(x);
            assert!(
                (erf(x) - want).abs() < 5e-7,
                "erf({x}) = {}, want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_masks() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        row[3] = f32::NEG_INFINITY;
        let want: Vec<f32> = {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax(&mut row);
        assert_eq!(row[3], 0.0);
        for (g, w) in row.iter().zip(&want) {
            assert!((g - w).abs() < 1e-7, "{g} vs {w}");
        }
    }

    #[test]
    fn f16_conversion_matches_half_at_every_length_and_stops_at_the_shorter_slice() {
        for n in [0, 1, 7, 8, 9, 16, 23, 100] {
            let src: Vec<f16> = (0..n)
                .map(|i| f16::from_f32((i as f32 * 0.37).sin() * 3.0))
                .collect();
            let mut ours = vec![f32::NAN; n + 2];
            f16_to_f32(&src, &mut ours);
            for (i, (a, b)) in ours.iter().zip(&src).enumerate() {
                assert_eq!(a.to_bits(), b.to_f32().to_bits(), "n = {n}, value {i}");
            }
            assert!(ours[n..].iter().all(|v| v.is_nan()), "n = {n}");
        }
    }

    #[test]
    fn map_times_values_matches_a_naive_product_in_f32_and_f16() {
        for (rows, cols, d) in [(3, 5, 32), (4, 9, 64), (9, 11, 32), (2, 7, 12)] {
            let stride = d + 3;
            let weights: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7) % 5) as f32 * 0.25)
                .collect();
            let v: Vec<f32> = (0..cols * stride)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let want: Vec<f32> = (0..rows * d)
                .map(|o| {
                    let (i, c) = (o / d, o % d);
                    (0..cols)
                        .map(|j| weights[i * cols + j] * v[j * stride + c])
                        .sum()
                })
                .collect();
            let halves: Vec<half::f16> = weights.iter().map(|&w| half::f16::from_f32(w)).collect();
            for map in [MapValues::F32(&weights), MapValues::F16(&halves)] {
                let mut out = vec![f32::NAN; rows * d];
                map_times_values(map, cols, &v, stride, &mut out);
                for (g, w) in out.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{rows}×{cols}×{d}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn layer_norm_normalises_the_sum() {
        let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.1).collect();
        let r: Vec<f32> = (0..40).map(|i| (i % 7) as f32).collect();
        let (g, b) = (vec![2.0; 40], vec![0.5; 40]);
        let mut dst = vec![0f32; 40];
        add_layer_norm(&mut dst, &x, &r, (&g, &b), 1e-12);
        let mean = dst.iter().sum::<f32>() / 40.0;
        let var = dst.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 40.0;
        assert!(
            (mean - 0.5).abs() < 1e-5 && (var - 4.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }
}
