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

/// Loss against step on a log axis, one series per run (unnamed when there is one).
pub fn chart(title: impl Into<String>, runs: Vec<(String, Vec<(f64, f64)>)>) -> Chart {
    let mut chart = Chart::new(title, "step", "training loss").log_y();
    let single = runs.len() == 1;
    for (name, points) in runs {
        chart = chart.with_series(if single { String::new() } else { name }, points);
    }
    chart
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
}
