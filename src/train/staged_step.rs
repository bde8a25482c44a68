//! A training step split at the bus (objectives/batch.rs): the objective's draw and the optimiser's
//! schedule go to the device in one batch, and the device work (loss, backward, gate, AdamW, EMA) reads
//! nothing else from the host. On CUDA that work is the same launches at every step, so after one eager
//! step has warmed the allocator the trainer captures the next into a graph and replays it from then on:
//! a step is then one copy up, one graph launch and the gate's copy down.
use super::options::TrainOptions;
use super::staging::Staging;
use super::TrainData;
use crate::backend::cuda::Graph;
use crate::nn::Model;
use crate::nvtx;
use crate::objectives::{DeviceBatch, HostBatch, Layout, LossInputs, Objective};
use crate::ops::optim::{clip_gate, AdamW, Ema, GateWorkspace, StepGate};
use crate::{backward, no_grad, DType, Device, ParamStore};
use anyhow::{Context, Result};

/// The batch entry of the step's dropout seed.
pub const DROPOUT_SEED: &str = "dropout seed";
/// The batch entry of AdamW's [lr, bias correction 1, bias correction 2].
pub const ADAM_SCHEDULE: &str = "adam schedule";

/// Eager steps before the capture: one, so the capture finds every block it needs in the pool.
const WARMUP_STEPS: u64 = 1;

/// What a run's CUDA steps keep between steps.
pub struct StepReplay {
    /// Capture the step and replay it (`--no-cuda-graph` turns it off).
    pub graphs: bool,
    staging: Staging,
    captured: Option<Captured>,
    eager_steps: u64,
}

struct Captured {
    // Declared first, so dropped first: the graph reads the buffers below.
    graph: Graph,
    gate: StepGate,
    layout: Layout,
}

impl Default for StepReplay {
    fn default() -> Self {
        StepReplay { graphs: true, staging: Staging::default(), captured: None, eager_steps: 0 }
    }
}

impl StepReplay {
    /// Whether the steps are replayed from a captured graph now.
    pub fn replaying(&self) -> bool {
        self.captured.is_some()
    }
}

/// The trainer's state a step updates.
pub struct StepParts<'a> {
    pub data: &'a TrainData,
    pub model: &'a Model,
    pub params: &'a ParamStore,
    pub opt: &'a mut AdamW,
    pub ema: &'a mut Ema,
    pub gate: &'a mut GateWorkspace,
    pub options: &'a TrainOptions,
    pub compute: DType,
}

/// Queues the step whose host side is `host` (the objective's draw; the seed and schedule are added here)
/// at learning rate `lr`, and returns its gate.
pub fn queue(
    objective: &dyn Objective,
    mut host: HostBatch,
    lr: f64,
    dropout_seed: u64,
    device: &Device,
    replay: &mut StepReplay,
    parts: StepParts<'_>,
) -> Result<StepGate> {
    host.push_seed(DROPOUT_SEED, dropout_seed)?;
    host.push_f32(ADAM_SCHEDULE, [3], &parts.opt.schedule_values(lr))?;
    let gpu = match device {
        Device::Cpu => return device_step(objective, &host.to_device(device)?, parts),
        Device::Cuda(gpu) => gpu,
    };
    if replay.captured.as_ref().is_some_and(|c| &c.layout != host.layout()) {
        // Every step has the same shapes (the loader drops the last partial batch); should one differ, the
        // graph cannot serve it.
        replay.captured = None;
    }
    let words = replay.staging.send(gpu, host.words())?;
    if let Some(c) = &replay.captured {
        let _range = nvtx::range("graph");
        c.graph.launch()?;
        parts.opt.count_replayed_step();
        return Ok(c.gate.clone());
    }
    if !replay.graphs || replay.eager_steps < WARMUP_STEPS {
        replay.eager_steps += 1;
        let batch = DeviceBatch::unpack(gpu, host.layout(), words)?;
        return device_step(objective, &batch, parts);
    }
    let layout = host.layout().clone();
    let (graph, gate) = {
        let _range = nvtx::range("capture");
        gpu.capture(|| device_step(objective, &DeviceBatch::unpack(gpu, &layout, words)?, parts)).context(
            "capturing the training step into a CUDA graph; `gsure train --no-cuda-graph` runs it launch by launch",
        )?
    };
    graph.launch()?;
    replay.captured = Some(Captured { graph, gate: gate.clone(), layout });
    Ok(gate)
}

/// The step's device work: loss, backward, gate, AdamW at the batch's schedule, EMA.
fn device_step(objective: &dyn Objective, batch: &DeviceBatch, p: StepParts<'_>) -> Result<StepGate> {
    let loss = {
        let _range = nvtx::range("objective");
        let inputs = LossInputs {
            data: p.data,
            model: p.model,
            options: p.options,
            dropout_seed: Some(batch.seed(DROPOUT_SEED)?),
            compute: p.compute,
        };
        objective.device_loss(batch, inputs)?
    };
    let grads = {
        let _range = nvtx::range("backward");
        backward(&loss)?
    };
    let gate = {
        let _range = nvtx::range("clip");
        clip_gate(p.params, &grads, Some(&loss), p.options.grad_clip, p.gate)?
    };
    no_grad(|| -> Result<()> {
        {
            let _range = nvtx::range("optimiser");
            p.opt.step_scheduled(p.params, &grads, batch.get(ADAM_SCHEDULE)?, &gate)?;
        }
        let _range = nvtx::range("ema");
        p.ema.update_gated(p.params, Some(&gate))
    })?;
    Ok(gate)
}
