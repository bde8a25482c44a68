//! `gsure train` as a user drives it: a resume takes the stored run's data and seed (not the command
//! line's), refuses flags that disagree with it, a run that died before its first checkpoint can be started
//! again without --force, and SIGTERM checkpoints and stops with the interrupted status.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gsure-cli-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn gsure(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gsure"));
    c.args(["train", "--device", "cpu", "--batch", "4"]).args(args);
    c
}

fn run(args: &[&str]) -> Output {
    gsure(args).output().expect("gsure runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The (step, loss) records of a run's log.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_resume_takes_the_stored_seed_and_refuses_flags_that_disagree() {
    let (whole, split) = (dir("whole"), dir("split"));
    let (w, s) = (whole.to_str().unwrap(), split.to_str().unwrap());
    let o = run(&["--out", w, "--steps", "6", "--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["--out", s, "--steps", "4", "--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The seed also draws the masks of the corrupted phantoms: a resume that took the default seed 0 from
    // the command line would train on other data and its losses would differ.
    let o = run(&["--out", s, "--steps", "6", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&split), losses(&whole), "a resumed run must repeat the uninterrupted one");

    let o = run(&["--out", s, "--steps", "8", "--resume", "--seed", "8"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("--seed 7") && e.contains("--seed 8"), "{e}");
    let o = run(&["--out", s, "--steps", "8", "--resume", "--loss", "naive"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("--loss"), "{e}");
    let o = run(&["--out", s, "--steps", "8", "--resume", "--dropout", "0.2"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("--dropout 0.2") && e.contains("configuration's rate"), "{e}");
    assert_eq!(losses(&split).len(), 6, "a refused resume changes nothing");
    // Repeating the stored value is not a conflict.
    let o = run(&["--out", s, "--steps", "7", "--resume", "--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn a_run_that_died_before_its_first_checkpoint_can_be_started_again() {
    let d = dir("dead");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("log.jsonl"), "{\"step\":1,\"loss\":0.5}\n{\"step\":2,").unwrap();
    let o = run(&["--out", d.to_str().unwrap(), "--steps", "2", "--resume"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("before its first checkpoint") && e.contains("without --resume"), "{e}");
    let o = run(&["--out", d.to_str().unwrap(), "--steps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&d).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2], "the dead run's log is replaced");
    let _ = std::fs::remove_dir_all(&d);
}

#[cfg(unix)]
#[test]
fn sigterm_checkpoints_and_stops_with_the_interrupted_status() {
    let d = dir("sigterm");
    let ds = d.to_str().unwrap();
    let mut child = gsure(&["--out", ds, "--steps", "60"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    // the first log record says training has started (one record per step)
    let start = Instant::now();
    while std::fs::metadata(d.join("log.jsonl")).map_or(true, |m| m.len() == 0) {
        assert!(start.elapsed() < Duration::from_secs(300), "no log record after 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted run exits with 130");
    let last = losses(&d).last().unwrap().0;
    assert!(last < 60, "stopped at step {last}, before the end");
    let o = run(&["--out", ds, "--resume"]);
    assert!(o.status.success(), "the checkpoint written at SIGTERM resumes: {}", stderr(&o));
    let steps: Vec<u64> = losses(&d).iter().map(|r| r.0).collect();
    assert_eq!(steps, (1..=60).collect::<Vec<_>>(), "every step once");
    let _ = std::fs::remove_dir_all(&d);
}
