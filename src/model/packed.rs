//! Linear layers with weights packed once at load, and the matrix product
//! the fused CPU path runs them with: `y = act(x · Wᵀ + bias)`.
//!
//! A general GEMM (candle's `gemm`) packs the weight matrix on every call;
//! with the few rows of a short prefill that packing costs as much as the
//! product itself. Here `W` (`[N, K]`, PyTorch layout) is stored as panels of
//! `PANEL` output columns, each laid out `[K][PANEL]` and cache-line
//! aligned, so the inner loop streams one panel while a register tile of
//! `rows × PANEL` accumulators stays put. Panels run in parallel (rayon);
//! the bias add and the activation happen as a tile is stored. The inner
//! loop uses AVX-512 or AVX2 + FMA when the CPU has them (checked at run
//! time) and portable code otherwise.

use rayon::prelude::*;

use super::simd;

/// Output columns per packed panel.
const PANEL: usize = 32;

/// Most rows in one register tile.
const MAX_TILE_ROWS: usize = 8;

/// A cache-line-aligned half of one panel row.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([f32; PANEL / 2]);

/// What is applied to each output value after the bias add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing.
    Identity,
    /// `gelu_erf` (see `simd` for its accuracy).
    GeluErf,
}

/// The instruction set the inner loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (whatever the compiler vectorises for the baseline target).
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// The instruction set's short name (`avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Every instruction set this CPU can run, the portable one first.
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let best = Self::detect();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| match best {
                Isa::Avx512 => true,
                Isa::Avx2 => *isa != Isa::Avx512,
                Isa::Portable => *isa == Isa::Portable,
            })
            .collect()
    }

    /// Rows per register tile.
    fn tile_rows(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 => 2,
            Isa::Portable => 4,
        }
    }
}

/// A linear layer `y = act(x · Wᵀ + bias)` with `W` packed for
/// [`PackedLinear::forward`].
#[derive(Debug, Clone)]
pub struct PackedLinear {
    /// Output columns (`N`).
    outputs: usize,
    /// Input columns (`K`).
    inputs: usize,
    /// `ceil(N / PANEL)` panels of `K` rows of two blocks; columns past `N`
    /// are zero.
    panels: Vec<Block>,
    /// `N` values (zeros for a layer without bias).
    bias: Vec<f32>,
    activation: Activation,
    isa: Isa,
}

impl PackedLinear {
    /// Packs `weight` (`[outputs, inputs]`, row-major) with an optional bias.
    ///
    /// # Panics
    /// If the lengths do not match `outputs` and `inputs` (a bug in the caller).
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        (outputs, inputs): (usize, usize),
        activation: Activation,
    ) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight is not [N, K]");
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), outputs, "bias is not [N]");
                b.to_vec()
            }
            None => vec![0.0; outputs],
        };
        let panels_count = outputs.div_ceil(PANEL);
        let mut panels = vec![Block::default(); panels_count * inputs * 2];
        for (n, row) in weight.chunks(inputs).enumerate() {
            let (panel, col) = (n / PANEL, n % PANEL);
            for (k, &w) in row.iter().enumerate() {
                panels[(panel * inputs + k) * 2 + col / (PANEL / 2)].0[col % (PANEL / 2)] = w;
            }
        }
        Self {
            outputs,
            inputs,
            panels,
            bias,
            activation,
            isa: Isa::detect(),
        }
    }

    /// Packs the rows of a `[outputs, inputs]` CPU tensor (and bias).
    pub fn from_tensor(
        weight: &candle_core::Tensor,
        bias: Option<&candle_core::Tensor>,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        let dims = weight.dims2()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let b = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
        Ok(Self::new(&w, b.as_deref(), dims, activation))
    }

    /// The same layer run on `isa` (tests compare instruction sets).
    #[cfg(test)]
    fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// `act(x · Wᵀ + bias)` for `x` of `rows × inputs` values: `rows × outputs` values.
    ///
    /// # Panics
    /// If `x` is not `rows × inputs` long (a bug in the caller).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len() % self.inputs.max(1), 0, "input is not [M, K]");
        let rows = x.len().checked_div(self.inputs).unwrap_or(0);
        let mut out = vec![0f32; rows * self.outputs];
        let dst = SharedOut(out.as_mut_ptr());
        let panel_len = self.inputs * 2;
        let tile = self.isa.tile_rows();
        (0..self.outputs.div_ceil(PANEL))
            .into_par_iter()
            .for_each(|p| {
                let panel = &self.panels[p * panel_len..(p + 1) * panel_len];
                let cols = (self.outputs - p * PANEL).min(PANEL);
                let mut acc = [[0f32; PANEL]; MAX_TILE_ROWS];
                for r0 in (0..rows).step_by(tile) {
                    let tile_rows = tile.min(rows - r0);
                    let a = &x[r0 * self.inputs..(r0 + tile_rows) * self.inputs];
                    self.tile(a, tile_rows, panel, &mut acc);
                    self.finish_tile(&mut acc[..tile_rows], p * PANEL);
                    for (r, acc_row) in acc[..tile_rows].iter().enumerate() {
                        let start = (r0 + r) * self.outputs + p * PANEL;
                        // SAFETY: `start..start + cols` lies inside `out`
                        // (row `r0 + r` < rows, columns of panel `p` < N), and
                        // each panel writes only its own columns, so no two
                        // tasks write the same element; `out` outlives the loop.
                        let row = unsafe { dst.slice(start, cols) };
                        row.copy_from_slice(&acc_row[..cols]);
                    }
                }
            });
        out
    }

    /// Adds the bias of the tile's columns and applies the activation.
    fn finish_tile(&self, tile: &mut [[f32; PANEL]], first_col: usize) {
        let cols = (self.outputs - first_col).min(PANEL);
        let bias = &self.bias[first_col..first_col + cols];
        for row in tile.iter_mut() {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        if self.activation == Activation::GeluErf {
            simd::gelu_erf(tile.as_flattened_mut());
        }
    }

    /// `acc[r][c] = Σ_k a[r·K + k] · panel[k][c]` for the first `rows` rows.
    fn tile(
        &self,
        a: &[f32],
        rows: usize,
        panel: &[Block],
        acc: &mut [[f32; PANEL]; MAX_TILE_ROWS],
    ) {
        let k = self.inputs;
        debug_assert!(a.len() == rows * k && panel.len() == 2 * k);
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` is only chosen after detecting AVX-512F;
            // `a` holds `rows × k` values and `panel` `k` rows of PANEL.
            Isa::Avx512 => unsafe { x86::tile_avx512(a, rows, k, panel, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, after detecting AVX2 and FMA.
            Isa::Avx2 => unsafe { x86::tile_avx2(a, rows, k, panel, acc) },
            _ => tile_portable(a, rows, k, panel, acc),
        }
    }
}

/// The output buffer shared by the panel tasks, which write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the tasks write disjoint elements (see `PackedLinear::forward`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// `len` values from `start`.
    ///
    /// # Safety
    /// The range lies inside the buffer and no one else accesses it meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// The register tile in plain Rust.
fn tile_portable(
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[Block],
    acc: &mut [[f32; PANEL]; MAX_TILE_ROWS],
) {
    for (r, acc_row) in acc[..rows].iter_mut().enumerate() {
        *acc_row = [0.0; PANEL];
        let a_row = &a[r * k..(r + 1) * k];
        for (kk, &av) in a_row.iter().enumerate() {
            let (lo, hi) = (&panel[2 * kk].0, &panel[2 * kk + 1].0);
            for c in 0..PANEL / 2 {
                acc_row[c] += av * lo[c];
                acc_row[PANEL / 2 + c] += av * hi[c];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The register tiles on AVX-512F and on AVX2 + FMA.

    use std::arch::x86_64::*;

    use super::{Block, MAX_TILE_ROWS, PANEL};

    /// Up to 8 rows × 32 columns in 16 zmm accumulators.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds `rows × k` values (`rows` ≤ 8) and
    /// `panel` `2k` blocks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(
        a: &[f32],
        rows: usize,
        k: usize,
        panel: &[Block],
        acc: &mut [[f32; PANEL]; MAX_TILE_ROWS],
    ) {
        macro_rules! tile {
            ($r:literal) => {{
                let mut sum = [[_mm512_setzero_ps(); 2]; $r];
                let b = panel.as_ptr() as *const f32;
                let a = a.as_ptr();
                for kk in 0..k {
                    // SAFETY: kk < k, so the loads lie inside `panel` (2k
                    // aligned blocks) and `a` (`rows × k`).
                    unsafe {
                        let b0 = _mm512_load_ps(b.add(kk * PANEL));
                        let b1 = _mm512_load_ps(b.add(kk * PANEL + 16));
                        for (r, s) in sum.iter_mut().enumerate() {
                            let av = _mm512_set1_ps(*a.add(r * k + kk));
                            s[0] = _mm512_fmadd_ps(av, b0, s[0]);
                            s[1] = _mm512_fmadd_ps(av, b1, s[1]);
                        }
                    }
                }
                for (s, out) in sum.iter().zip(acc.iter_mut()) {
                    // SAFETY: each accumulator row holds 32 values.
                    unsafe {
                        _mm512_storeu_ps(out.as_mut_ptr(), s[0]);
                        _mm512_storeu_ps(out.as_mut_ptr().add(16), s[1]);
                    }
                }
            }};
        }
        match rows {
            1 => tile!(1),
            2 => tile!(2),
            3 => tile!(3),
            4 => tile!(4),
            5 => tile!(5),
            6 => tile!(6),
            7 => tile!(7),
            _ => tile!(8),
        }
    }

    /// Up to 2 rows × 32 columns in 8 ymm accumulators.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` holds `rows × k` values (`rows` ≤ 2) and
    /// `panel` `2k` blocks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        a: &[f32],
        rows: usize,
        k: usize,
        panel: &[Block],
        acc: &mut [[f32; PANEL]; MAX_TILE_ROWS],
    ) {
        macro_rules! tile {
            ($r:literal) => {{
                let mut sum = [[_mm256_setzero_ps(); 4]; $r];
                let b = panel.as_ptr() as *const f32;
                let a = a.as_ptr();
                for kk in 0..k {
                    // SAFETY: as in `tile_avx512`.
                    unsafe {
                        let bv = [
                            _mm256_load_ps(b.add(kk * PANEL)),
                            _mm256_load_ps(b.add(kk * PANEL + 8)),
                            _mm256_load_ps(b.add(kk * PANEL + 16)),
                            _mm256_load_ps(b.add(kk * PANEL + 24)),
                        ];
                        for (r, s) in sum.iter_mut().enumerate() {
                            let av = _mm256_set1_ps(*a.add(r * k + kk));
                            for (sj, bj) in s.iter_mut().zip(bv) {
                                *sj = _mm256_fmadd_ps(av, bj, *sj);
                            }
                        }
                    }
                }
                for (s, out) in sum.iter().zip(acc.iter_mut()) {
                    for (j, sj) in s.iter().enumerate() {
                        // SAFETY: each accumulator row holds 32 values.
                        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *sj) };
                    }
                }
            }};
        }
        match rows {
            1 => tile!(1),
            _ => tile!(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn naive(x: &[f32], w: &[f32], bias: &[f32], (n, k): (usize, usize)) -> Vec<f32> {
        x.chunks(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    row.iter()
                        .zip(&w[j * k..(j + 1) * k])
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        + bias[j]
                })
            })
            .collect()
    }

    #[test]
    fn every_instruction_set_matches_a_naive_product() {
        for isa in Isa::available() {
            for (m, n, k) in [
                (1, 1, 1),
                (3, 33, 7),
                (8, 64, 16),
                (17, 70, 45),
                (40, 96, 384),
            ] {
                let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
                let layer =
                    PackedLinear::new(&w, Some(&b), (n, k), Activation::Identity).with_isa(isa);
                let got = layer.forward(&x);
                let want = naive(&x, &w, &b, (n, k));
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-4, "{isa:?} {m}×{n}×{k}: max diff {diff}");
            }
        }
    }

    #[test]
    fn gelu_is_applied_after_the_bias() {
        let layer = PackedLinear::new(&[1.0, -1.0], Some(&[0.5, 0.0]), (2, 1), Activation::GeluErf);
        let got = layer.forward(&[2.0]);
        let gelu = |t: f32| 0.5 * t * (1.0 + candle_core::cpu::erf::erf_f32(t / 2f32.sqrt()));
        assert!((got[0] - gelu(2.5)).abs() < 1e-6 && (got[1] - gelu(-2.0)).abs() < 1e-6);
    }

    #[test]
    fn no_rows_give_no_output() {
        let layer = PackedLinear::new(&values(6, 1), None, (2, 3), Activation::Identity);
        assert!(layer.forward(&[]).is_empty());
    }
}
