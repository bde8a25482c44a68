//! Compiles every `kernels/*.cu` to PTX and to a fatbin with nvcc and embeds both.
//!
//! nvcc is looked up as `$NVCC`, then `nvcc` on `PATH`, then where `scripts/install-nvcc` puts it
//! (`$GSURE_CUDA_CACHE` or `~/.cache/gsure/cuda-13.0.88`), so a plain `cargo build` after the test script has
//! run once still compiles the kernels. The target defaults to sm_90a (H100/H200) and is
//! overridden by `GSURE_CUDA_ARCH` (e.g. `sm_80`). Without nvcc the build still succeeds: every kernel module
//! is an empty string, `cfg(has_kernels)` is unset, and asking for the CUDA device returns an error that says
//! how to get nvcc. A kernel that fails to compile fails the build, with nvcc's message.
//!
//! Per `kernels/<stem>.cu`, in `OUT_DIR`:
//! - `<stem>.ptx`: the PTX for `GSURE_CUDA_ARCH` (`.target sm_90a`), static `ptx::<STEM>`, as always.
//! - `<stem>.fatbin`: SASS for that arch plus the portable PTX (`compute_90`), static `ptx::<STEM>_FATBIN`,
//!   which `Gpu::func` loads when it is not empty, so the driver runs no JIT (ptxas takes seconds per module
//!   on the GPU machine). The SASS is compiled from the portable PTX, which is `<stem>.ptx` with its
//!   `.target` line made generic (nvcc writes the same PTX for sm_90a and compute_90 when no arch-specific
//!   feature is used; if one is, ptxas rejects the generic PTX and the fatbin falls back to the arch-specific
//!   PTX). The fatbin is not compressed: its PTX stays plain text, which the emulated driver (emu/) reads for
//!   the entry points and their parameters; the build checks that every `.entry` is there as text. Empty
//!   when GSURE_CUDA_ARCH names a virtual arch (`compute_XY`: PTX only) and with `GSURE_CUDA_SASS=0`, which
//!   saves ptxas, about 40% of the kernels' compile time.
//!
//! Files compile in parallel (cargo's job count), the largest first.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_kernels)");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=GSURE_CUDA_ARCH");
    println!("cargo:rerun-if-env-changed=GSURE_CUDA_SASS");
    println!("cargo:rerun-if-env-changed=PATH");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=GSURE_CUDA_CACHE");
    let arch = env::var("GSURE_CUDA_ARCH").unwrap_or_else(|_| "sm_90a".into());
    let runs = |nvcc: &str| Command::new(nvcc).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    let cache = env::var("GSURE_CUDA_CACHE")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| PathBuf::from(h).join(".cache/gsure/cuda-13.0.88")))
        .map(|d| d.join("nvidia/cu13/bin/nvcc").to_string_lossy().to_string());
    let candidates: Vec<String> = env::var("NVCC").ok().into_iter().chain(["nvcc".to_string()]).chain(cache).collect();
    let found = candidates.iter().find(|c| runs(c)).cloned();
    let have_nvcc = found.is_some();
    let nvcc = found.unwrap_or_default();
    if let Ok(asked) = env::var("NVCC") {
        if asked != nvcc {
            println!("cargo:warning=NVCC={asked} does not run; using {}", if have_nvcc { &nvcc } else { "no nvcc" });
        }
    }

    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .expect("kernels/ folder missing")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();

    if have_nvcc {
        let want_sass = env::var("GSURE_CUDA_SASS").map_or(true, |v| v != "0");
        let sass = if want_sass { sass_target(&arch) } else { None };
        if want_sass && sass.is_none() {
            println!("cargo:warning=GSURE_CUDA_ARCH={arch} is a virtual arch: no SASS is embedded (PTX only)");
        }
        // Largest first (popped from the end): attention.cu alone is a third of the work.
        let mut queue: Vec<&PathBuf> = sources.iter().collect();
        queue.sort_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        let queue = Mutex::new(queue);
        let errors = Mutex::new(Vec::<String>::new());
        let jobs = env::var("NUM_JOBS")
            .ok()
            .and_then(|j| j.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .clamp(1, sources.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    let Some(src) = queue.lock().unwrap().pop() else { break };
                    let stem = src.file_stem().unwrap().to_string_lossy().to_string();
                    if let Err(e) = compile(&nvcc, &arch, sass.as_ref(), src, &out, &stem) {
                        errors.lock().unwrap().push(e);
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap();
        if !errors.is_empty() {
            panic!("{}", errors.join("\n\n"));
        }
    }

    let mut consts = String::new();
    for src in &sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        if !have_nvcc {
            fs::write(out.join(format!("{stem}.ptx")), "").unwrap();
            fs::write(out.join(format!("{stem}.fatbin")), "").unwrap();
        }
        let up = stem.to_uppercase();
        // Statics, not consts: a const's text is copied into every codegen unit that uses it (megabytes each).
        consts.push_str(&format!(
            "pub static {up}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));\n\
             pub static {up}_FATBIN: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.fatbin\"));\n"
        ));
    }
    consts.push_str("/// Every module's PTX with its fatbin (empty when there is none), for `Gpu::func`.\n");
    consts.push_str("pub static MODULES: &[(&str, &[u8])] = &[\n");
    for src in &sources {
        let up = src.file_stem().unwrap().to_string_lossy().to_uppercase();
        consts.push_str(&format!("    ({up}, {up}_FATBIN),\n"));
    }
    consts.push_str("];\n");
    consts.push_str(&format!("pub const CUDA_ARCH: &str = {arch:?};\n"));
    fs::write(out.join("kernels.rs"), consts).unwrap();

    if have_nvcc {
        println!("cargo:rustc-cfg=has_kernels");
    } else {
        println!(
            "cargo:warning=nvcc not found ($NVCC, PATH or the scripts/install-nvcc cache): CUDA kernels are \
             stubbed and the CUDA device is unavailable. Run scripts/install-nvcc, then rebuild."
        );
    }
}

/// The SASS target of a real arch and its portable virtual arch: `sm_90a` → (`sm_90a`, `90`), `sm_100f` →
/// (`sm_100f`, `100`), `sm_80` → (`sm_80`, `80`); None for a virtual arch (`compute_90`).
struct Sass {
    real: String,
    generic: String,
}

fn sass_target(arch: &str) -> Option<Sass> {
    let rest = arch.strip_prefix("sm_")?;
    let generic: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if generic.is_empty() {
        return None;
    }
    Some(Sass { real: arch.to_string(), generic })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let output = cmd.output().map_err(|e| format!("could not run nvcc for {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nvcc failed on {what}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `<stem>.ptx` and `<stem>.fatbin` (empty without a SASS target) for one kernel file.
fn compile(nvcc: &str, arch: &str, sass: Option<&Sass>, src: &Path, out: &Path, stem: &str) -> Result<(), String> {
    let ptx = out.join(format!("{stem}.ptx"));
    let fatbin = out.join(format!("{stem}.fatbin"));
    run(
        Command::new(nvcc)
            .args(["-ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch={arch}"))
            .args(["-Ikernels", "-o"])
            .arg(&ptx)
            .arg(src),
        &src.display().to_string(),
    )?;
    let Some(sass) = sass else {
        fs::write(&fatbin, "").map_err(|e| e.to_string())?;
        return Ok(());
    };
    let text = fs::read_to_string(&ptx).map_err(|e| format!("{}: {e}", ptx.display()))?;
    let real = &sass.real;
    let num = real.trim_start_matches("sm_");
    let generic = &sass.generic;
    // The portable PTX: the same text with `.target sm_90` for `.target sm_90a` (written into a folder of its
    // own, under the same file name, so the SASS's debug sections name `<stem>.ptx`).
    let dir = out.join("generic");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let generic_ptx = dir.join(format!("{stem}.ptx"));
    let target = format!("\n.target sm_{num}\n");
    let portable = if num != generic.as_str() && text.contains(&target) {
        text.replacen(&target, &format!("\n.target sm_{generic}\n"), 1)
    } else {
        text.clone()
    };
    fs::write(&generic_ptx, &portable).map_err(|e| e.to_string())?;
    // The fatbin: the PTX image first, then the SASS; uncompressed (--no-compress), so the PTX is plain text.
    let fatbin_cmd = |input: &Path, ptx_arch: &str| {
        let mut c = Command::new(nvcc);
        c.args(["-fatbin", "--no-compress", "-O3", "-lineinfo"])
            .arg(format!("-gencode=arch=compute_{ptx_arch},code=compute_{ptx_arch}"))
            .arg(format!("-gencode=arch=compute_{num},code={real}"))
            .arg("-o")
            .arg(&fatbin)
            .arg(input);
        c
    };
    let what = format!("{} (fatbin: {real} SASS + compute_{generic} PTX)", src.display());
    if let Err(e) = run(&mut fatbin_cmd(&generic_ptx, generic), &what) {
        if num == generic.as_str() {
            return Err(e);
        }
        // An arch-specific feature (wgmma, setmaxnreg, ...): embed the arch-specific PTX instead. Expected for
        // the Hopper kernels, so a note in the build script's output (cargo -vv), not a warning.
        println!(
            "{stem}: the PTX needs {real}'s own features, so its fatbin carries compute_{num} PTX, not the portable \
             compute_{generic}"
        );
        run(&mut fatbin_cmd(&ptx, num), &format!("{} (fatbin: {real} SASS + compute_{num} PTX)", src.display()))?;
    }
    // The emulated driver reads entry points from the PTX text inside the fatbin: make sure it is there.
    let bin = fs::read(&fatbin).map_err(|e| format!("{}: {e}", fatbin.display()))?;
    let bin = String::from_utf8_lossy(&bin);
    for line in text.lines().filter(|l| l.contains(".entry ")) {
        let entry = line.trim();
        if !bin.contains(entry) {
            return Err(format!(
                "{}: `{entry}` is not in {} as text (was the fatbin compressed?)",
                src.display(),
                fatbin.display()
            ));
        }
    }
    Ok(())
}
