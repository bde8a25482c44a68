//! Runs bench cases: builds each once, times its forward under no-grad, then records one forward with
//! gradients on and times the recorded node's backward closure with a random upstream gradient (under
//! no-grad, exactly as `autograd::backward_with` calls it). A case that fails (or panics) is reported with
//! its error and the run goes on.
use super::report::{CaseResult, Ceilings, DeviceInfo, Direction, Report, REFERENCE_BF16_TFLOPS};
use super::timer::{Stats, Timer};
use super::BenchCase;
use crate::{no_grad, DType, Device, Tensor};
use anyhow::{anyhow, bail, Result};
use rand::SeedableRng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// How much to repeat and which cases to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub warmup: usize,
    pub repeats: usize,
    /// Comma-separated substrings; a case runs when "<op> <label>" contains any of them.
    pub filter: Option<String>,
    pub quick: bool,
}

impl Options {
    /// Defaults for `device`: many repeats on CUDA (cheap, noisy), few on the CPU (slow, steady).
    pub fn defaults(device: &Device, quick: bool) -> Options {
        let (warmup, repeats) = match (device.is_cuda(), quick) {
            (true, false) => (5, 50),
            (true, true) => (2, 10),
            (false, false) => (1, 5),
            (false, true) => (0, 2),
        };
        Options { warmup, repeats, filter: None, quick }
    }
}

/// Whether `case` passes the comma-separated `filter` (no filter: every case).
pub fn matches(case: &BenchCase, filter: Option<&str>) -> bool {
    let Some(filter) = filter else { return true };
    let name = format!("{} {}", case.op, case.label);
    filter.split(',').map(str::trim).filter(|f| !f.is_empty()).any(|f| name.contains(f))
}

/// Runs the `cases` that pass the filter on `device` in `dtype`, measuring the device's ceilings first.
/// `progress` sees each case's result as it finishes.
pub fn run(
    cases: Vec<BenchCase>,
    device: &Device,
    dtype: DType,
    opts: &Options,
    mut progress: impl FnMut(usize, usize, &CaseResult),
) -> Result<Report> {
    match (device, dtype) {
        (Device::Cpu, DType::F32) | (Device::Cuda(_), DType::F32 | DType::BF16) => {}
        (Device::Cpu, _) => bail!("bench: the CPU backend is benchmarked in f32 (it has no {dtype}); use --dtype f32"),
        (Device::Cuda(_), _) => bail!("bench: the CUDA backend holds f32 and bf16, not {dtype}"),
    }
    let cases: Vec<BenchCase> = cases
        .into_iter()
        .filter(|c| matches(c, opts.filter.as_deref()))
        .filter(|c| match c.skip.and_then(|why| why(device, dtype)) {
            Some(why) => {
                eprintln!("bench: {} {} left out: {why}", c.op, c.label);
                false
            }
            None => true,
        })
        .collect();
    let mut timer = Timer::new(device)?;
    let mem_gbps = timer.copy_bandwidth_gbps(if opts.quick { 5 } else { 20 })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e37_79b9);
    let mut results = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(case, device, dtype, opts, &mut timer, &mut rng)));
        let mut r = CaseResult::new(case);
        match outcome {
            Ok(Ok((fwd, bwd))) => {
                r.forward = Some(Direction::new(fwd, case.flops_fwd, case.elems_fwd, dtype));
                match bwd {
                    Ok(s) => r.backward = Some(Direction::new(s, case.flops_bwd, case.elems_bwd, dtype)),
                    Err(note) => r.backward_note = Some(note),
                }
            }
            Ok(Err(e)) => r.error = Some(format!("{e:#}")),
            Err(panic) => r.error = Some(format!("panicked: {}", panic_message(&panic))),
        }
        if let Some(gpu) = device.gpu() {
            // Hand this case's buffers back to the driver: later cases have other shapes.
            if let Err(e) = gpu.synchronize() {
                r.error.get_or_insert_with(|| format!("{e:#}"));
            }
            gpu.empty_cache();
        }
        r.seconds = t0.elapsed().as_secs_f64();
        progress(i + 1, cases.len(), &r);
        results.push(r);
    }
    let ceilings = ceilings(device, dtype, mem_gbps, &results);
    // The predictions are for bf16 on the H200's class of GPU; a CPU, f32 or emulated-device run is not
    // judged by them (the emulator's times say nothing about a GPU's).
    let emulated = device.gpu().is_some_and(|g| g.name().starts_with("gsure emulated device"));
    let judged = device.is_cuda() && dtype == DType::BF16 && !emulated;
    for (r, case) in results.iter_mut().zip(&cases) {
        for (backward, d) in [(false, &mut r.forward), (true, &mut r.backward)] {
            if let Some(d) = d {
                d.set_fractions(&ceilings);
                d.set_prediction(if judged { super::predictions::predicted(case, backward) } else { None });
            }
        }
    }
    Ok(Report {
        gsure_version: env!("CARGO_PKG_VERSION").to_string(),
        commit: git_commit(),
        date: utc_now(),
        device: DeviceInfo::of(device),
        dtype: dtype.name().to_string(),
        warmup: opts.warmup,
        repeats: opts.repeats,
        quick: opts.quick,
        filter: opts.filter.clone(),
        ceilings,
        cases: results,
    })
}

/// Times one case: Ok((forward, Ok(backward) or Err(why backward is n/a))).
fn run_case(
    case: &BenchCase,
    device: &Device,
    dtype: DType,
    opts: &Options,
    timer: &mut Timer,
    rng: &mut rand::rngs::StdRng,
) -> Result<(Stats, std::result::Result<Stats, String>)> {
    let fwd = (case.build)(device, dtype)?;
    let samples = timer.time(opts.warmup, opts.repeats, || no_grad(&fwd).map(drop))?;
    let fwd_stats = Stats::from_samples(&samples)?;

    // One recorded forward; its node's backward is what `autograd::backward_with` would call.
    let out = fwd()?;
    let Some(node) = out.node().cloned() else {
        return Ok((fwd_stats, Err("n/a: the output records no autograd node (no input requires grad)".into())));
    };
    let g = Tensor::randn(out.shape().clone(), out.dtype(), out.device(), rng)?;
    drop(out);
    let samples = timer.time(opts.warmup, opts.repeats, || no_grad(|| (node.backward)(&g)).map(drop))?;
    Ok((fwd_stats, Ok(Stats::from_samples(&samples)?)))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// The device's ceilings: copy bandwidth as measured; peak bf16 tensor throughput from the best matmul
/// case of a bf16 run, else the reference value measured with PyTorch on the H100 (labelled as such).
fn ceilings(device: &Device, dtype: DType, mem_gbps: Option<f64>, results: &[CaseResult]) -> Ceilings {
    if !device.is_cuda() {
        return Ceilings::default();
    }
    let best_matmul = results
        .iter()
        .filter(|r| r.op == "matmul")
        .flat_map(|r| [&r.forward, &r.backward].into_iter().flatten().map(move |d| (r, d)))
        .filter_map(|(r, d)| d.tflops.map(|t| (t, r.label.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let (peak_tflops, peak_source) = match best_matmul {
        Some((t, label)) if dtype == DType::BF16 => (t, format!("measured: best gsure matmul case ({label})")),
        _ => (
            REFERENCE_BF16_TFLOPS,
            "reference, not measured in this run: bf16 8192^3 torch.mm on an H200 (PyTorch)".to_string(),
        ),
    };
    Ceilings {
        mem_gbps,
        mem_source: mem_gbps.map(|_| "measured: 256 MiB device-to-device copy, bytes read + written".into()),
        peak_tflops: Some(peak_tflops),
        peak_source: Some(peak_source),
    }
}

/// The commit being benchmarked: `GSURE_COMMIT` when set (binaries carried to a machine without the
/// repository), else `git rev-parse --short HEAD`.
pub fn git_commit() -> Option<String> {
    if let Ok(c) = std::env::var("GSURE_COMMIT") {
        if !c.trim().is_empty() {
            return Some(c.trim().to_string());
        }
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Now in UTC as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs as i64)
}

/// Formats seconds since the Unix epoch; the civil date from the day count (Howard Hinnant's algorithm).
pub fn format_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Parses `f32` or `bf16` (the CLI's `--dtype`).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        other => Err(anyhow!("unknown dtype {other:?}: use f32 or bf16")),
    }
}

#[cfg(test)]
mod tests {
    use super::format_utc;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
