//! Timing several variants (kernels, engines) against each other in warm
//! blocks: rounds of one block of back-to-back runs per variant, in rotating
//! order, with a pause before each block. Within a block a variant's worker
//! threads stay warm (as when serving a stream of requests); the pause lets
//! the previous variant's idle workers (candle's and ONNX Runtime's spin
//! before they sleep) stop competing for the cores. Used by the benchmarks.

use std::time::Duration;

use super::stats::median;

/// How the blocks are run.
#[derive(Debug, Clone, Copy)]
pub struct BlockPlan {
    /// Rounds; each runs one block per variant.
    pub rounds: usize,
    /// Runs per block; the first warms the variant up and is not counted.
    pub block: usize,
    /// Pause before each block.
    pub pause: Duration,
}

impl BlockPlan {
    /// One line describing the protocol, for a benchmark's header.
    pub fn describe(&self) -> String {
        format!(
            "{} rounds of one block per variant (rotating order, {} ms pause, {} timed runs after one warm-up); medians, ratios = medians of per-round block ratios",
            self.rounds,
            self.pause.as_millis(),
            self.block.saturating_sub(1)
        )
    }
}

/// The timed runs of every variant: `metrics` values per run (for example
/// total and attention milliseconds).
#[derive(Debug, Clone)]
pub struct BlockTimes {
    /// `[variant][round][metric]`: the median of that block's runs.
    rounds: Vec<Vec<Vec<f64>>>,
    /// `[variant][metric]`: every timed run.
    runs: Vec<Vec<Vec<f64>>>,
}

impl BlockTimes {
    /// The median of every timed run of `variant` for `metric`.
    pub fn median(&self, variant: usize, metric: usize) -> f64 {
        median(&self.runs[variant][metric]).unwrap_or(f64::NAN)
    }

    /// The median over rounds of `numerator`'s block median divided by
    /// `denominator`'s, for `metric`.
    pub fn ratio(&self, numerator: usize, denominator: usize, metric: usize) -> f64 {
        let ratios: Vec<f64> = self.rounds[numerator]
            .iter()
            .zip(&self.rounds[denominator])
            .map(|(a, b)| a[metric] / b[metric])
            .collect();
        median(&ratios).unwrap_or(f64::NAN)
    }
}

/// Runs `variants` variants under `plan`; `run(variant)` does one timed run
/// and returns its `metrics` measurements.
pub fn timed_blocks(
    variants: usize,
    metrics: usize,
    plan: BlockPlan,
    mut run: impl FnMut(usize) -> anyhow::Result<Vec<f64>>,
) -> anyhow::Result<BlockTimes> {
    anyhow::ensure!(
        plan.block >= 2,
        "a block needs a warm-up run and a timed run"
    );
    let mut times = BlockTimes {
        rounds: vec![Vec::with_capacity(plan.rounds); variants],
        runs: vec![vec![Vec::new(); metrics]; variants],
    };
    for round in 0..plan.rounds {
        for i in 0..variants {
            let variant = (round + i) % variants;
            std::thread::sleep(plan.pause);
            let mut block = vec![Vec::with_capacity(plan.block); metrics];
            for r in 0..plan.block {
                let values = run(variant)?;
                anyhow::ensure!(
                    values.len() == metrics,
                    "a run returned {} values",
                    values.len()
                );
                if r > 0 {
                    block.iter_mut().zip(&values).for_each(|(b, v)| b.push(*v));
                }
            }
            for (all, values) in times.runs[variant].iter_mut().zip(&block) {
                all.extend(values);
            }
            times.rounds[variant].push(
                block
                    .iter()
                    .map(|v| median(v).unwrap_or(f64::NAN))
                    .collect(),
            );
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_rotate_and_drop_the_warm_up() {
        let plan = BlockPlan {
            rounds: 3,
            block: 3,
            pause: Duration::ZERO,
        };
        let mut order = Vec::new();
        let mut calls = [0usize; 2];
        let times = timed_blocks(2, 1, plan, |v| {
            order.push(v);
            calls[v] += 1;
            // The first run of every block is slow; variant 1 is twice as slow.
            let warm_up = (calls[v] - 1) % 3 == 0;
            Ok(vec![(v + 1) as f64 * if warm_up { 100.0 } else { 1.0 }])
        })
        .unwrap();
        assert_eq!(
            order,
            [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
        );
        assert_eq!(times.median(0, 0), 1.0);
        assert_eq!(times.median(1, 0), 2.0);
        assert_eq!(times.ratio(1, 0, 0), 2.0);
    }
}
