//! NVTX ranges name the training step on a profiler's timeline. On the emulated device, emu/run puts a
//! recording libnvToolsExt.so.1 on the library path (emu/src/nvtx.cpp): the ranges of a GSURE training
//! step are read back and checked — balanced, the step's phases in order, the model's forward and each
//! op's forward inside the objective, each op's backward inside the backward. In the CPU pass the library
//! is absent: every range is a no-op and the same step still runs.
use gsure::train::{load_train_data, TrainOptions};
use gsure::train::{LossKind, Trainer};
use gsure::Device;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

/// One range of the trace: its name and the ranges opened inside it, in order.
#[derive(Debug, Default)]
struct Node {
    name: String,
    children: Vec<Node>,
}

impl Node {
    fn child_names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
    fn find(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    fn contains(&self, name: &str) -> bool {
        self.children.iter().any(|c| c.name == name || c.contains(name))
    }
}

/// Parses the recording library's lines into one tree per thread, checking that every pop closes the
/// innermost open range and that nothing is left open.
fn parse(trace: &str) -> HashMap<String, Node> {
    let mut stacks: HashMap<String, Vec<Node>> = HashMap::new();
    for line in trace.lines() {
        let mut parts = line.splitn(4, ' ');
        let (kind, thread, depth) = (parts.next().unwrap(), parts.next().unwrap().to_string(), parts.next());
        assert_ne!(kind, "error", "the NVTX library reported: {line}");
        let stack = stacks.entry(thread).or_insert_with(|| vec![Node::default()]);
        match kind {
            "push" => {
                let depth: usize = depth.unwrap().parse().unwrap();
                assert_eq!(depth, stack.len(), "push at depth {depth} with {} open: {line}", stack.len() - 1);
                stack.push(Node { name: parts.next().unwrap_or("").to_string(), children: vec![] });
            }
            "pop" => {
                let depth: usize = depth.unwrap().parse().unwrap();
                assert_eq!(depth, stack.len() - 1, "pop of depth {depth} with {} open: {line}", stack.len() - 1);
                let done = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(done);
            }
            _ => {}
        }
    }
    stacks
        .into_iter()
        .map(|(thread, mut stack)| {
            assert_eq!(stack.len(), 1, "thread {thread} ended with open ranges");
            (thread, stack.pop().unwrap())
        })
        .collect()
}

#[test]
fn a_training_step_reads_by_name_on_a_timeline() {
    let trace = std::env::temp_dir().join(format!("gsure-nvtx-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    // The recording library reads this at its first call, and nothing in this test binary has made one yet.
    std::env::set_var("GSURE_EMU_NVTX", &trace);
    let device = gsure::testing::gpu_or_skip("NVTX on CUDA (running on the CPU)").unwrap_or(Device::Cpu);
    let opts = TrainOptions {
        steps: 2,
        batch: 2,
        checkpoint_every: 1000,
        sample_every: 0,
        phantoms: 8,
        loss: LossKind::Gsure,
        beta_start: 4e-4,
        ..TrainOptions::for_config("tiny")
    };
    let model = gsure::nn::ModelConfig::by_name(&opts.config).unwrap();
    let data = load_train_data(None, &opts, &model).unwrap();
    let out = std::env::temp_dir().join(format!("gsure-nvtx-run-{}", std::process::id()));
    let mut t = Trainer::new(opts, data, &out, &device, false, true).unwrap();
    // Every step issued launch by launch, as a profile of the step's parts reads it (a step replayed from
    // a CUDA graph is one "graph" range: its kernels are the graph's).
    t.use_cuda_graphs(false);
    t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    if !gsure::nvtx::enabled() {
        println!("no NVTX library: the ranges were no-ops and the step ran");
        return;
    }
    let threads = parse(&std::fs::read_to_string(&trace).expect("the recording NVTX library wrote no trace"));
    let steps: Vec<&Node> =
        threads.values().flat_map(|root| root.children.iter()).filter(|n| n.name == "step").collect();
    assert_eq!(steps.len(), 2, "one `step` range per training step");
    for step in steps {
        assert_eq!(
            step.child_names(),
            // `run` queues the step's gate to the host and goes on ("gate to host"); `train_step` would
            // wait for it ("loss readback").
            ["data", "objective", "backward", "clip", "optimiser", "ema", "gate to host"],
            "the step's phases, in order"
        );
        let objective = step.find("objective").unwrap();
        let forward = objective.find("ddim-unet forward").expect("the model's forward inside the objective");
        for op in ["conv2d", "group_norm", "attention", "matmul", "silu"] {
            assert!(forward.contains(op), "{op} inside the U-Net's forward: {:?}", forward.child_names());
        }
        assert!(objective.contains("gsure_loss"), "the GSURE loss inside the objective");
        let backward = step.find("backward").unwrap();
        for op in ["conv2d backward", "group_norm backward", "attention backward", "gsure_loss backward"] {
            assert!(backward.find(op).is_some(), "{op} in backward: {:?}", backward.child_names());
        }
        let conv = backward.find("conv2d backward").unwrap();
        assert!(conv.contains("conv2d_dgrad") && conv.contains("conv2d_wgrad"), "{:?}", conv.child_names());
    }
}
