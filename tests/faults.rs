//! Fault injection against the release binary, as a hostile but ordinary user or machine would inflict it:
//! kill -9 at random points of a run (then resume: bitwise the uninterrupted run), a full disk, a
//! read-only folder, outputs that point at files the user has, sizes no machine can hold, a gzip bomb, and
//! inputs whose results could not be trusted. Each case asserts what was refused and what was kept.
//!
//! The full-disk and read-only cases mount small tmpfs file systems, which needs root (CI runs as root);
//! without it they say so on stderr and check nothing else.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gsure-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gsure(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gsure"));
    c.args(args).env("RUST_BACKTRACE", "0");
    c
}

fn run(args: &[&str]) -> Output {
    gsure(args).output().expect("gsure runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refusal: exit status 1 with an error (never 101, a panic, nor a signal, an abort), and its message.
fn refused(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a refusal (exit 1), got {:?}: {e}", o.status);
    assert!(e.contains("Error:") && !e.contains("panicked"), "{e}");
    e
}

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["train", "--device", "cpu", "--batch", "4", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    gsure(&args)
}

/// (step, loss) of every record of a run's log.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Every tensor of a safetensors file, by name, as raw bits.
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let f = gsure::io::safetensors::File::open(path).unwrap();
    let mut names: Vec<String> = f.names().into_iter().map(String::from).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), f.f32(&n).unwrap().1.iter().map(|v| v.to_bits()).collect())).collect()
}

/// Files of ours left by an interrupted write (`.NAME.tmpPID`).
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.') && n.contains(".tmp"))
        .collect()
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn log_records(run: &Path) -> usize {
    std::fs::read_to_string(run.join("log.jsonl")).map_or(0, |t| t.lines().count())
}

#[cfg(unix)]
#[test]
fn kill_9_at_random_points_then_resume_repeats_the_uninterrupted_run_bitwise() {
    const STEPS: u64 = 40;
    let settings = ["--steps", "40", "--seed", "5", "--checkpoint-every", "3"];
    let (whole, split) = (dir("whole"), dir("split"));
    let o = train(&whole, &settings).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills_mid_run = 0;
    for round in 0..12 {
        let resume = split.join("checkpoint.safetensors").exists();
        let mut args: Vec<&str> = settings.to_vec();
        if resume {
            args.push("--resume");
        }
        let mut child = train(&split, &args).stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        // Kill once the log has passed a random step (or at start-up), then a random 0-15 ms later: some
        // kills land between steps, some inside a checkpoint's write.
        let target = log_records(&split) + (xorshift(&mut rng) % 8) as usize;
        let start = Instant::now();
        while log_records(&split) < target && child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(120), "round {round}: no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(xorshift(&mut rng) % 16));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills_mid_run += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
    }
    assert!(kills_mid_run >= 3, "only {kills_mid_run} kills landed while the run was going");
    // Finish whatever the kills left.
    let mut args: Vec<&str> = settings.to_vec();
    if split.join("checkpoint.safetensors").exists() {
        args.push("--resume");
    }
    let o = train(&split, &args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let steps: Vec<u64> = losses(&split).iter().map(|r| r.0).collect();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>(), "every step once in the log");
    assert_eq!(losses(&split), losses(&whole), "the losses of the uninterrupted run, bit for bit");
    let (a, b) = (tensors(&whole.join("checkpoint.safetensors")), tensors(&split.join("checkpoint.safetensors")));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "tensor {na} differs from the uninterrupted run's");
    }
    assert!(temps(&split).is_empty(), "left behind: {:?}", temps(&split));
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// A tmpfs of `size` mounted at `at` (`ro` for a read-only one), unmounted when dropped; None without root.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs", at.to_str().unwrap()]).output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(o) => panic!("mount -t tmpfs -o {options} failed as root: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("mount: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[cfg(unix)]
#[test]
fn a_full_disk_fails_the_checkpoint_and_keeps_the_old_one() {
    let d = dir("full");
    let Some(_fs) = Tmpfs::mount(&d, "size=48m") else { return };
    let run_dir = d.join("run");
    let o = train(&run_dir, &["--steps", "4", "--checkpoint-every", "2"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let checkpoint = run_dir.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();

    // Fill the file system to the last byte.
    let filler = d.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
    }
    let o = train(&run_dir, &["--steps", "8", "--resume"]).output().unwrap();
    let e = refused(&o);
    assert!(e.contains("No space left on device") && e.contains("checkpoint"), "{e}");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before, "the old checkpoint, byte for byte");
    assert!(temps(&run_dir).is_empty(), "a failed write left {:?} filling the disk", temps(&run_dir));

    // With the space back, the run resumes from the kept checkpoint and logs every step once.
    std::fs::remove_file(&filler).unwrap();
    let o = train(&run_dir, &["--steps", "8", "--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let steps: Vec<u64> = losses(&run_dir).iter().map(|r| r.0).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[cfg(unix)]
#[test]
fn a_read_only_folder_is_refused_naming_the_path() {
    let d = dir("ro");
    let Some(_fs) = Tmpfs::mount(&d, "ro,size=1m") else { return };
    let out = d.join("run");
    let e = refused(&train(&out, &["--steps", "4"]).output().unwrap());
    assert!(e.contains(out.to_str().unwrap()) && e.contains("Read-only file system"), "{e}");
    let target = d.join("set.safetensors");
    let e = refused(&run(&[
        "data",
        "make",
        "--op",
        "noise",
        "--sigma0",
        "0.1",
        "--n",
        "8",
        "--size",
        "8",
        "--out",
        target.to_str().unwrap(),
    ]));
    assert!(e.contains("set.safetensors") && e.contains("Read-only file system"), "{e}");
}

#[test]
fn outputs_that_point_at_the_users_files_are_refused_and_the_files_kept() {
    let d = dir("outputs");
    let run_dir = d.join("run");
    let o = train(&run_dir, &["--steps", "2"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let checkpoint = run_dir.join("checkpoint.safetensors");
    let kept = std::fs::read(&checkpoint).unwrap();
    let (r, c) = (run_dir.to_str().unwrap(), checkpoint.to_str().unwrap());

    // sample: the stem's .safetensors is the run's checkpoint, with and without --force.
    let stem = run_dir.join("checkpoint");
    for force in [false, true] {
        let mut args = vec!["sample", "--device", "cpu", "--run", r, "--n", "2", "--out", stem.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let e = refused(&run(&args));
        assert!(e.contains("input") && e.contains("checkpoint.safetensors"), "{e}");
    }
    // train into a run without --resume or --force.
    let e = refused(&train(&run_dir, &["--steps", "2"]).output().unwrap());
    assert!(e.contains("--resume") && e.contains("--force"), "{e}");
    // data make over an existing file; data import over its own input, even with --force.
    let e = refused(&run(&["data", "make", "--op", "noise", "--sigma0", "0.1", "--n", "8", "--size", "8", "--out", c]));
    assert!(e.contains("--force"), "{e}");
    let e = refused(&run(&["data", "import", "--format", "idx", "--input", c, "--out", c, "--force"]));
    assert!(e.contains("input"), "{e}");
    // plot over an existing file.
    let e = refused(&run(&["plot", "loss", r, "--out", c]));
    assert!(e.contains("--force") || e.contains("input"), "{e}");
    // data import's --preview over an existing PNG.
    let idx = d.join("images-idx3-ubyte");
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4];
    bytes.extend([7u8; 32]);
    std::fs::write(&idx, bytes).unwrap();
    let png = d.join("preview-all.png");
    std::fs::write(&png, b"mine").unwrap();
    let (i, p, o) = (idx.to_str().unwrap(), d.join("preview.png"), d.join("imported.safetensors"));
    let e = refused(&run(&[
        "data",
        "import",
        "--format",
        "idx",
        "--input",
        i,
        "--out",
        o.to_str().unwrap(),
        "--preview",
        p.to_str().unwrap(),
    ]));
    assert!(e.contains("--preview") && e.contains("preview-all.png"), "{e}");
    assert_eq!(std::fs::read(&png).unwrap(), b"mine");
    assert!(!o.exists(), "refused before anything was written");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), kept, "the checkpoint, byte for byte");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sizes_no_machine_holds_are_refused_with_the_memory_they_need() {
    let d = dir("sizes");
    let out = d.join("x.safetensors");
    let o = out.to_str().unwrap();
    for (args, fix) in [
        (
            vec!["data", "make", "--op", "noise", "--sigma0", "0.1", "--n", "1000000000", "--size", "32", "--out", o],
            "--n",
        ),
        (
            vec!["data", "make", "--op", "noise", "--sigma0", "0.1", "--n", "4", "--size", "100000", "--out", o],
            "--size",
        ),
    ] {
        let e = refused(&run(&args));
        assert!(e.contains("would need at least") && e.contains("available") && e.contains(fix), "{e}");
        assert!(!out.exists());
    }
    let run_dir = d.join("run");
    let o = train(&run_dir, &["--steps", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = refused(&run(&["sample", "--device", "cpu", "--run", run_dir.to_str().unwrap(), "--n", "1000000000000"]));
    assert!(e.contains("would need at least") && e.contains("--n"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `head` then `zeros` zero bytes as gzip: ~3.9 GB from a few MB, in repeated gzip members (which every
/// gzip reader must accept).
fn gzip_bomb(path: &Path, head: &[u8], zeros: u64) {
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    let chunk = vec![0u8; 16 << 20];
    let member = |bytes: &[u8]| {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    let full = member(&chunk);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&member(head)).unwrap();
    for _ in 0..zeros / chunk.len() as u64 {
        f.write_all(&full).unwrap();
    }
    f.write_all(&member(&chunk[..(zeros % chunk.len() as u64) as usize])).unwrap();
}

/// `gsure data import ARGS` with 1 GiB of address space: inflating a whole 3.9 GB bomb, as the importers
/// once did, cannot fit.
#[cfg(unix)]
fn import_within_1_gib(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = gsure(&["data", "import"]);
    c.args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 1 << 30, rlim_max: 1 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

#[cfg(unix)]
#[test]
fn a_gzip_bomb_costs_what_the_import_keeps() {
    let d = dir("bomb");
    // IDX: a header for 3,700 images of 1024×1024, then as many zero bytes; --limit 3 keeps three.
    let bomb = d.join("bomb-idx3-ubyte.gz");
    let mut head = vec![0, 0, 8, 3];
    for v in [3700u32, 1024, 1024] {
        head.extend_from_slice(&v.to_be_bytes());
    }
    gzip_bomb(&bomb, &head, 3700 << 20);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 64 << 20);
    let (b, out) = (bomb.to_str().unwrap(), d.join("kept.safetensors"));
    let o = import_within_1_gib(&["--format", "idx", "--input", b, "--limit", "3", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let set = gsure::data::dataset::CleanDataset::open(&out).unwrap();
    assert_eq!(set.dims(), [3, 1, 1024, 1024]);
    // Without --limit the import would keep it all: refused up front with what that would take (the
    // address-space limit counts as the memory available, as a container's cgroup limit would).
    let all = d.join("all.safetensors");
    let e = refused(&import_within_1_gib(&["--format", "idx", "--input", b, "--out", all.to_str().unwrap()]));
    assert!(e.contains("would need at least") && e.contains("--limit"), "{e}");

    // NIfTI: a valid 32×32×8 volume followed by 3.9 GB of bytes the header does not claim.
    let volume: Vec<f64> = (0..32 * 32 * 8).map(|i| ((i * 37) % 251) as f64).collect();
    let nii = gsure::data::import::nifti::encode([32, 32, 8], 16, true, &volume, 1.0, 0.0);
    let bomb = d.join("bomb.nii.gz");
    gzip_bomb(&bomb, &nii, 3700 << 20);
    let out = d.join("slices.safetensors");
    let o =
        import_within_1_gib(&["--format", "nifti", "--input", bomb.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(gsure::data::dataset::CleanDataset::open(&out).unwrap().dims()[2..], [32, 32]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn untrustworthy_inputs_and_results_are_refused_before_work() {
    let d = dir("eval");
    let run_dir = d.join("run");
    let o = train(&run_dir, &["--steps", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Held-out clean phantoms, without labels.
    let held = d.join("held.safetensors");
    let images = gsure::data::phantoms(16, 16, 9);
    let array = gsure::data::dataset::Array4 { data: &images.images, dims: images.dims };
    let meta = gsure::data::dataset::CleanMeta::new("phantoms", "test", 16);
    gsure::data::dataset::CleanDataset::write(&held, array, None, &meta).unwrap();
    let (r, h) = (run_dir.to_str().unwrap(), held.to_str().unwrap());
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--device", "cpu", "--run", r, "--data", h, "--samples", "4", "--heldout", "4"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let e = refused(&eval(&["--what", "denoise,fid"]));
    assert!(e.contains("--train"), "{e}");
    // A training set without labels cannot train fid's classifier.
    let e = refused(&eval(&["--what", "fid", "--train", h]));
    assert!(e.contains("labels") && e.contains("held.safetensors"), "{e}");
    let e = refused(&eval(&["--what", "denoise", "--compare-with", d.join("none.json").to_str().unwrap()]));
    assert!(e.contains("--compare-with") && e.contains("none.json"), "{e}");
    let e = refused(&eval(&["--what", "swd", "--compare-with", h]));
    assert!(e.contains("denoise"), "{e}");
    // Refused before any network ran: the evaluation folder was not even created.
    assert!(!run_dir.join("eval").exists(), "nothing was evaluated");

    // A dataset whose masks leave a pixel unobserved in every example is not written.
    let few = d.join("few.safetensors");
    let e = refused(&run(&[
        "data",
        "make",
        "--op",
        "pixel",
        "--p",
        "0.5",
        "--n",
        "2",
        "--size",
        "8",
        "--out",
        few.to_str().unwrap(),
    ]));
    assert!(e.contains("observed in none of the 2 examples") && e.contains("--n"), "{e}");
    assert!(!few.exists());

    // NaN samples are not a score.
    let nan = d.join("nan.safetensors");
    let values = vec![f32::NAN; 4 * 16 * 16];
    let entry = gsure::io::safetensors::Entry { name: "samples".into(), shape: vec![4, 1, 16, 16], data: &values };
    gsure::io::safetensors::write(&nan, &[entry], &serde_json::json!({})).unwrap();
    let e = refused(&eval(&["--what", "swd", "--samples-from", nan.to_str().unwrap()]));
    assert!(e.contains("NaN") && e.contains("not scored"), "{e}");
    assert!(!run_dir.join("eval").join("eval.json").exists(), "nothing was scored");

    // An evaluation is not replaced without --force.
    let o = eval(&["--what", "denoise"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = run_dir.join("eval").join("eval.json");
    let first = std::fs::read(&report).unwrap();
    let e = refused(&eval(&["--what", "denoise", "--seed", "3"]));
    assert!(e.contains("eval.json") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&report).unwrap(), first, "the earlier evaluation, byte for byte");
    let o = eval(&["--what", "denoise", "--seed", "3", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}
