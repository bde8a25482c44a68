//! Samples a trained Tweedie run with a chosen sampling mode, whatever the run's own `sampling` setting
//! (truncated at σ_n unless consistency was trained, full otherwise), so that one run can be measured both
//! ways (experiments/tweedie_phantoms.sh).
//! Usage: cargo run --release --example tweedie_sample -- RUN truncated|full N SEED OUT.safetensors
use anyhow::{bail, Context, Result};
use gsure::train::{load_run, sample, Sampling};
use gsure::Device;

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        bail!("usage: tweedie_sample RUN truncated|full N SEED OUT.safetensors");
    }
    let device = Device::Cpu;
    let (options, config, model, schedule, _) = load_run(std::path::Path::new(&a[1]), &device)?;
    let Sampling::Tweedie { sigma_n, .. } = options.sampling else {
        bail!("{} is not a Tweedie run (sampling {:?})", a[1], options.sampling);
    };
    let full = match a[2].as_str() {
        "truncated" => false,
        "full" => true,
        m => bail!("sampling mode {m}: expected truncated or full"),
    };
    let n: usize = a[3].parse().context("N")?;
    let seed: u64 = a[4].parse().context("SEED")?;
    let values = sample(&model, &schedule, Sampling::Tweedie { sigma_n, full }, n, seed, &device)?;
    let r = config.resolution();
    let dims = [n, config.image_channels(), r, r];
    let entry = gsure::io::safetensors::Entry { name: "samples".into(), shape: dims.to_vec(), data: &values };
    let meta = serde_json::json!({ "run": a[1], "seed": seed, "full": full });
    gsure::io::safetensors::write(std::path::Path::new(&a[5]), &[entry], &meta)?;
    Ok(())
}
