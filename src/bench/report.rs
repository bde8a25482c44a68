//! Bench results: per case and direction the median time, the achieved TFLOP/s and GB/s, and their
//! fraction of the device's ceilings; printed as a table and written as JSON (`gsure bench ops --out`).
use super::predictions::{verdict, Prediction};
use super::timer::Stats;
use super::BenchCase;
use crate::{DType, Device};
use serde::Serialize;
use std::fmt::Write as _;

/// bf16 8192^3 `torch.mm` (random data) on the project's H200 lent machine, measured with PyTorch before
/// any gsure run: the fallback ceiling when a run measured none itself, always labelled as such.
pub const REFERENCE_BF16_TFLOPS: f64 = 790.0;

/// A 256 MiB device-to-device copy on the same H200 (bytes read + written per second), measured with it: the
/// bandwidth the predictions' floors assume (a run measures its own).
pub const REFERENCE_MEM_GBPS: f64 = 4300.0;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Ceilings {
    /// Memory bandwidth in GB/s (bytes read + written per second).
    pub mem_gbps: Option<f64>,
    pub mem_source: Option<String>,
    /// Peak bf16 tensor-core throughput in TFLOP/s.
    pub peak_tflops: Option<f64>,
    /// Whether `peak_tflops` was measured in this run or is the reference value.
    pub peak_source: Option<String>,
}

/// Timing and throughput of one direction (forward or backward) of one case.
#[derive(Clone, Debug, Serialize)]
pub struct Direction {
    #[serde(flatten)]
    pub stats: Stats,
    /// Useful TFLOP/s at the median time (None for memory-bound ops, flops = 0).
    pub tflops: Option<f64>,
    /// Minimal bytes moved (elems * dtype size) per second at the median time, in GB/s.
    pub gbps: Option<f64>,
    /// tflops / peak_tflops.
    pub frac_compute: Option<f64>,
    /// gbps / mem_gbps.
    pub frac_bandwidth: Option<f64>,
    /// The larger of the two: how close the op runs to the nearer roofline ("speed of light").
    pub frac_of_ceiling: Option<f64>,
    /// What this direction was predicted to reach (bf16 CUDA runs; predictions.rs) and how it compares:
    /// "hit", "below" or "above".
    pub predicted: Option<Prediction>,
    pub verdict: Option<&'static str>,
}

impl Direction {
    pub fn new(stats: Stats, flops: f64, elems: f64, dtype: DType) -> Direction {
        let secs = stats.median_ms * 1e-3;
        let rate = |x: f64| (x > 0.0 && secs > 0.0).then(|| x / secs);
        Direction {
            tflops: rate(flops).map(|r| r / 1e12),
            gbps: rate(elems * dtype.size_in_bytes() as f64).map(|r| r / 1e9),
            stats,
            frac_compute: None,
            frac_bandwidth: None,
            frac_of_ceiling: None,
            predicted: None,
            verdict: None,
        }
    }

    /// Records the prediction and how the measured fraction compares with it.
    pub fn set_prediction(&mut self, p: Option<Prediction>) {
        self.predicted = p;
        self.verdict = p.zip(self.frac_of_ceiling).map(|(p, f)| verdict(f, &p));
    }

    pub fn set_fractions(&mut self, c: &Ceilings) {
        self.frac_compute = self.tflops.zip(c.peak_tflops).map(|(t, p)| t / p);
        self.frac_bandwidth = self.gbps.zip(c.mem_gbps).map(|(g, m)| g / m);
        self.frac_of_ceiling = match (self.frac_compute, self.frac_bandwidth) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Everything measured for one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub op: String,
    pub label: String,
    pub params: serde_json::Value,
    pub flops_fwd: f64,
    pub flops_bwd: f64,
    pub elems_fwd: f64,
    pub elems_bwd: f64,
    pub forward: Option<Direction>,
    pub backward: Option<Direction>,
    /// Why there is no backward timing (the output recorded no node).
    pub backward_note: Option<String>,
    /// Why the case failed (build, forward or backward error, or a panic).
    pub error: Option<String>,
    /// Wall time spent on the case, building included.
    pub seconds: f64,
}

impl CaseResult {
    pub fn new(case: &BenchCase) -> CaseResult {
        CaseResult {
            op: case.op.to_string(),
            label: case.label.clone(),
            params: case.params.clone(),
            flops_fwd: case.flops_fwd,
            flops_bwd: case.flops_bwd,
            elems_fwd: case.elems_fwd,
            elems_bwd: case.elems_bwd,
            forward: None,
            backward: None,
            backward_note: None,
            error: None,
            seconds: 0.0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// "cpu" or "cuda".
    pub kind: String,
    pub name: String,
    pub compute_capability: Option<String>,
}

impl DeviceInfo {
    pub fn of(device: &Device) -> DeviceInfo {
        match device {
            Device::Cpu => DeviceInfo {
                kind: "cpu".into(),
                name: format!(
                    "{} ({} threads)",
                    std::env::consts::ARCH,
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
                ),
                compute_capability: None,
            },
            Device::Cuda(g) => DeviceInfo {
                kind: "cuda".into(),
                name: g.name().to_string(),
                compute_capability: Some(format!("sm_{}{}", g.compute_capability().0, g.compute_capability().1)),
            },
        }
    }
}

/// A whole `gsure bench ops` run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub gsure_version: String,
    pub commit: Option<String>,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    pub device: DeviceInfo,
    pub dtype: String,
    pub warmup: usize,
    pub repeats: usize,
    pub quick: bool,
    pub filter: Option<String>,
    pub ceilings: Ceilings,
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// The report as JSON, marked complete (`"partial": false`; the CLI writes partial results while running).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a report serialises");
        v["partial"] = serde_json::Value::Bool(false);
        v
    }

    /// The results as a fixed-width table, with the ceilings and any failed cases listed below it.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "gsure {} ({}) on {} [{}], {}, {} repeats after {} warm-up",
            self.gsure_version,
            self.commit.as_deref().unwrap_or("unknown commit"),
            self.device.name,
            self.device.kind,
            self.dtype,
            self.repeats,
            self.warmup
        );
        let _ = writeln!(
            s,
            "{:<12} {:<44} {:<3} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7} {:>11}",
            "op", "case", "dir", "median ms", "min ms", "p90 ms", "TFLOP/s", "GB/s", "%peak", "predicted"
        );
        // Three significant figures or more: a slow CPU op still shows a readable rate.
        let opt = |x: Option<f64>, prec: usize| {
            x.map_or("-".to_string(), |v| {
                let prec = if v.abs() >= 100.0 {
                    prec
                } else if v.abs() >= 1.0 {
                    prec.max(2)
                } else {
                    prec.max(3)
                };
                format!("{v:.prec$}")
            })
        };
        for r in &self.cases {
            let label: String = if r.label.chars().count() > 44 {
                r.label.chars().take(43).chain(['~']).collect()
            } else {
                r.label.clone()
            };
            for (dir, d) in [("fwd", &r.forward), ("bwd", &r.backward)] {
                match d {
                    Some(d) => {
                        let _ = writeln!(
                            s,
                            "{:<12} {:<44} {:<3} {:>10.4} {:>10.4} {:>10.4} {:>9} {:>9} {:>7} {:>11}",
                            r.op,
                            label,
                            dir,
                            d.stats.median_ms,
                            d.stats.min_ms,
                            d.stats.p90_ms,
                            opt(d.tflops, 1),
                            opt(d.gbps, 0),
                            opt(d.frac_of_ceiling.map(|f| 100.0 * f), 1),
                            d.predicted.map_or("-".to_string(), |p| format!(
                                "{:.1}-{:.1} {}",
                                100.0 * p.lo,
                                100.0 * p.hi,
                                d.verdict.unwrap_or("")
                            ))
                        );
                    }
                    None => {
                        let why = if let Some(e) = &r.error {
                            format!("FAILED: {}", e.lines().next().unwrap_or(""))
                        } else if dir == "bwd" {
                            "n/a".to_string()
                        } else {
                            "-".to_string()
                        };
                        let _ = writeln!(s, "{:<12} {:<44} {:<3} {why}", r.op, label, dir);
                        if r.error.is_some() {
                            break;
                        }
                    }
                }
            }
        }
        let c = &self.ceilings;
        if let Some(m) = c.mem_gbps {
            let _ = writeln!(s, "memory bandwidth: {m:.0} GB/s ({})", c.mem_source.as_deref().unwrap_or(""));
        }
        if let Some(p) = c.peak_tflops {
            let _ = writeln!(s, "peak bf16 tensor: {p:.0} TFLOP/s ({})", c.peak_source.as_deref().unwrap_or(""));
        }
        let failed = self.cases.iter().filter(|r| r.error.is_some()).count();
        if failed > 0 {
            let _ = writeln!(s, "{failed} of {} cases failed:", self.cases.len());
            for r in self.cases.iter().filter(|r| r.error.is_some()) {
                let _ = writeln!(s, "  {} {}: {}", r.op, r.label, r.error.as_deref().unwrap_or(""));
            }
        }
        s
    }
}
