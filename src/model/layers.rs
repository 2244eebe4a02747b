//! The layer loop every forward pass shares: for each layer ask the planner
//! (seeing the layer's input), run attention under its plan, run the rest of
//! the layer; each stage timed, and on an asynchronous device (CUDA) every
//! stage waits for its kernels before its timer stops, so the timers measure
//! work, not kernel launches.
//!
//! The loop runs on a rayon worker thread: the fused kernels' parallel loops
//! then start inside the pool, where idle workers pick them up, instead of
//! being handed in from outside and waited for on a lock (which costs a
//! thread wake-up per loop, a third of a short forward pass on 2 cores).

use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor};

use super::attention::AttentionOutput;
use super::bert::ForwardOutput;
use super::plan::{LayerPlan, Planner};
use super::timing::{ForwardTimings, LayerTiming};

/// Runs `layers` layers on `x` (the embeddings' output, which took
/// `embeddings`): `attention(layer, input, plan)` then
/// `finish(layer, input, context)`.
pub(super) fn run_layers(
    device: &Device,
    (mut x, embeddings): (Tensor, Duration),
    layers: usize,
    planner: &mut dyn Planner,
    attention: impl Fn(usize, &Tensor, &LayerPlan) -> Result<AttentionOutput> + Sync,
    finish: impl Fn(usize, &Tensor, &Tensor) -> Result<Tensor> + Sync,
) -> Result<ForwardOutput> {
    rayon::scope(|_| {
        let mut timings = ForwardTimings {
            embeddings,
            layers: Vec::with_capacity(layers),
        };
        let mut maps = Vec::with_capacity(layers);
        for i in 0..layers {
            let start = Instant::now();
            let plan = planner.plan_layer(i, &x)?;
            device.synchronize()?;
            let planned = start.elapsed();
            let start = Instant::now();
            let AttentionOutput { context, captured } = attention(i, &x, &plan)?;
            device.synchronize()?;
            let attended = start.elapsed();
            let start = Instant::now();
            x = finish(i, &x, &context)?;
            device.synchronize()?;
            timings.layers.push(LayerTiming {
                plan: planned,
                attention: attended,
                rest: start.elapsed(),
            });
            maps.push(captured);
        }
        Ok(ForwardOutput {
            hidden: x,
            maps,
            timings,
        })
    })
}
