//! The gsure command line: thin; all work is done by the library.
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gsure::bench;
use gsure::Device;

#[derive(Parser)]
#[command(name = "gsure", version, about = "Train diffusion models from corrupted data (GSURE, Ambient, Tweedie)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Says which devices this build can use.
    Info,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Times every op's forward and backward at U-Net shapes against the device's ceilings.
    Ops(OpsArgs),
}

#[derive(Args)]
struct OpsArgs {
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// f32 or bf16 (default: bf16 on cuda, f32 on cpu).
    #[arg(long)]
    dtype: Option<String>,
    /// Runs only cases whose "<op> <label>" contains this (comma-separated alternatives).
    #[arg(long)]
    filter: Option<String>,
    /// Timed repeats per case and direction.
    #[arg(long)]
    repeats: Option<usize>,
    /// Untimed runs before the timed ones.
    #[arg(long)]
    warmup: Option<usize>,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Prints the case list as JSON (for benches/torch_ops.py) and exits.
    #[arg(long)]
    list_json: bool,
    /// Fewer repeats (for a quick look or a time-limited GPU run).
    #[arg(long)]
    quick: bool,
}

fn bench_ops(a: OpsArgs) -> Result<()> {
    if a.list_json {
        let cases: Vec<_> =
            bench::all_cases().into_iter().filter(|c| bench::runner::matches(c, a.filter.as_deref())).collect();
        println!("{}", serde_json::to_string_pretty(&bench::list_json(&cases))?);
        return Ok(());
    }
    let device = match a.device.as_deref() {
        Some(d) => Device::parse(d)?,
        None => {
            let d = Device::best();
            eprintln!("device: {d} (pass --device to choose)");
            d
        }
    };
    let dtype = match a.dtype.as_deref() {
        Some(d) => bench::runner::parse_dtype(d)?,
        None if device.is_cuda() => gsure::DType::BF16,
        None => gsure::DType::F32,
    };
    let mut opts = bench::Options::defaults(&device, a.quick);
    opts.filter = a.filter;
    if let Some(r) = a.repeats {
        opts.repeats = r.max(1);
    }
    if let Some(w) = a.warmup {
        opts.warmup = w;
    }
    // After each case the results so far go to --out (marked partial), so a run stopped by a time limit
    // still leaves what it measured; the complete report replaces them at the end.
    let mut done = Vec::new();
    let out = a.out.clone();
    let report = bench::run(bench::all_cases(), &device, dtype, &opts, |i, n, r| {
        if let Some(path) = &out {
            done.push(serde_json::to_value(r).unwrap_or_default());
            let partial = serde_json::json!({
                "partial": true, "gsure_version": env!("CARGO_PKG_VERSION"), "dtype": dtype.name(),
                "device": bench::report::DeviceInfo::of(&device), "cases": done,
            });
            if let Err(e) = std::fs::write(path, partial.to_string()) {
                eprintln!("could not write partial results to {}: {e}", path.display());
            }
        }
        let ms =
            |d: &Option<bench::Direction>| d.as_ref().map_or("-".into(), |d| format!("{:.4} ms", d.stats.median_ms));
        match &r.error {
            Some(e) => eprintln!("[{i}/{n}] {} {}: FAILED ({e})", r.op, r.label),
            None => eprintln!(
                "[{i}/{n}] {} {}: fwd {} bwd {} ({:.1} s)",
                r.op,
                r.label,
                ms(&r.forward),
                ms(&r.backward),
                r.seconds
            ),
        }
    })?;
    print!("{}", report.table());
    if let Some(path) = a.out {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing the bench results to {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Info => {
            println!("gsure {}", env!("CARGO_PKG_VERSION"));
            println!("kernels compiled: {}", gsure::backend::cuda::Gpu::built_with_kernels());
            match gsure::backend::cuda::Gpu::shared() {
                Ok(g) => println!("cuda: {} (sm_{}{})", g.name(), g.compute_capability().0, g.compute_capability().1),
                Err(e) => println!("cuda: unavailable ({e:#})"),
            }
        }
        Command::Bench { what: BenchCommand::Ops(a) } => bench_ops(a)?,
    }
    Ok(())
}
