//! A run's training loss as a chart: read from its log.jsonl, drawn alone (the run's loss.png) or beside
//! other runs (`gsure plot loss`).
use crate::io::plot::Chart;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// (step, loss) of every record of a run's log.jsonl. A line that does not parse (the partial last line of
/// a killed run) is skipped: the curve is for reading, the checkpoint is the record.
pub fn read(run_dir: &Path) -> Result<Vec<(f64, f64)>> {
    let log = run_dir.join("log.jsonl");
    let text = std::fs::read_to_string(&log).with_context(|| {
        format!("reading {} (is {} a run folder of gsure train?)", log.display(), run_dir.display())
    })?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect()
}

/// Loss against step on a log axis. One run: its logged losses and, past 100 records, their running mean;
/// several runs: each run's running mean (raw per-step losses of several runs overdraw each other).
pub fn chart(title: impl Into<String>, runs: Vec<(String, Vec<(f64, f64)>)>) -> Chart {
    let mut chart = Chart::new(title, "step", "training loss").log_y();
    if let [(_, points)] = runs.as_slice() {
        let smooth = points.len() > 100;
        if !smooth {
            return chart.with_series("", points.clone());
        }
        let w = window(points.len());
        return chart
            .with_faint_series("per logged step", points.clone())
            .with_series(format!("running mean of {w} records"), running_mean(points, w));
    }
    for (name, points) in runs {
        let w = window(points.len());
        let label = if w > 1 { format!("{name} (running mean of {w})") } else { name };
        chart = chart.with_series(label, running_mean(&points, w));
    }
    chart
}

/// Five per cent of the records past 100 records, else 1 (no smoothing).
fn window(n: usize) -> usize {
    if n > 100 {
        n / 20
    } else {
        1
    }
}

/// The mean of the last `w` losses at each record (fewer at the start).
fn running_mean(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(step, loss)) in points.iter().enumerate() {
        sum += loss;
        if i >= w {
            sum -= points[i - w].1;
        }
        out.push((step, sum / (i + 1).min(w) as f64));
    }
    out
}

/// Draws several runs' losses on one chart at `out`; each run is named by its folder.
pub fn compare(run_dirs: &[impl AsRef<Path>], out: &Path) -> Result<()> {
    if run_dirs.is_empty() {
        bail!("plot loss: no runs given; pass one or more run folders of gsure train");
    }
    let mut runs = Vec::new();
    for dir in run_dirs {
        let dir = dir.as_ref();
        runs.push((dir.display().to_string(), read(dir)?));
    }
    chart("Training loss", runs).write_png(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partial_last_line_is_skipped() {
        let text = "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.25}\n{\"step\":3,\"lo";
        assert_eq!(super::parse(text), vec![(1.0, 0.5), (2.0, 0.25)]);
    }

    #[test]
    fn the_running_mean_averages_the_last_records() {
        let pts = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(super::running_mean(&pts, 2), vec![(1.0, 1.0), (2.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
    }
}
