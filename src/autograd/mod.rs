//! Reverse-mode autograd on a dynamic graph: each op output that needs a gradient carries a [`Node`] with
//! its inputs and a backward closure (which holds only what backward needs). [`backward`] orders the
//! graph topologically from the loss and runs the closures in reverse, summing gradients where a tensor is
//! used more than once. Backward itself runs in no-grad mode: the engine is first-order.
mod params;

pub use params::ParamStore;

use crate::tensor::{Tensor, TensorId};
use anyhow::{bail, Context, Result};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// Maps the gradient of the op's output to the gradients of its inputs (None: input needs none).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

pub struct Node {
    pub op: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
}

impl Node {
    /// The node for an op's output, or None when gradients are off or no input tracks them.
    pub fn record(
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Option<Node> {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.tracks_grad()) {
            return None;
        }
        Some(Node { op, inputs: inputs.iter().map(|&t| t.clone()).collect(), backward: Box::new(backward) })
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording ops (sampling, evaluation, optimiser updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Gradients of trainable leaves (tensors with `requires_grad`), by tensor id.
#[derive(Default)]
pub struct Grads(HashMap<TensorId, Tensor>);

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    pub fn take(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Back-propagates from a one-element `loss`.
pub fn backward(loss: &Tensor) -> Result<Grads> {
    if loss.numel() != 1 {
        bail!("backward: the loss must have one element, got shape {}; reduce it first", loss.shape());
    }
    let seed = Tensor::full(loss.shape().clone(), 1.0, loss.dtype(), loss.device())?;
    backward_with(loss, seed)
}

/// Back-propagates `grad` (the gradient of some scalar with respect to `out`) through the graph.
pub fn backward_with(out: &Tensor, grad: Tensor) -> Result<Grads> {
    out.check_same(&grad, "backward")?;
    let order = topological_order(out);
    no_grad(|| {
        let mut pending: HashMap<TensorId, Tensor> = HashMap::from([(out.id(), grad)]);
        let mut leaves = HashMap::new();
        for t in order.iter().rev() {
            let Some(g) = pending.remove(&t.id()) else { continue };
            if t.requires_grad() {
                leaves.insert(t.id(), g);
                continue;
            }
            let Some(node) = t.node() else { continue };
            let input_grads = {
                let _range = crate::nvtx::range2(node.op, "backward");
                (node.backward)(&g).with_context(|| format!("backward of {}", node.op))?
            };
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !input.tracks_grad() {
                    continue;
                }
                if ig.shape() != input.shape() {
                    bail!(
                        "backward of {}: gradient of shape {} for an input of shape {}",
                        node.op,
                        ig.shape(),
                        input.shape()
                    );
                }
                let acc = match pending.remove(&input.id()) {
                    Some(prev) => crate::ops::add(&prev, &ig)?,
                    None => ig,
                };
                pending.insert(input.id(), acc);
            }
        }
        Ok(Grads(leaves))
    })
}

/// Tensors reachable from `root` through recorded nodes, each after all of its inputs.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (tensor, inputs already pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for input in &node.inputs {
                if input.tracks_grad() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
