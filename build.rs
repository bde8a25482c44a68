//! Compiles every `kernels/*.cu` to PTX with nvcc and embeds it (see DESIGN.md, "Kernels and the build").
//!
//! nvcc is looked up as `$NVCC`, then `nvcc` on `PATH`, then where `scripts/install-nvcc` puts it
//! (`$GSURE_CUDA_CACHE` or `~/.cache/gsure/cuda-13.0.88`), so a plain `cargo build` after the test script has
//! run once still compiles the kernels. The target defaults to sm_90a (H100/H200) and is
//! overridden by `GSURE_CUDA_ARCH` (e.g. `sm_80`). Without nvcc the build still succeeds: every kernel module
//! is an empty string, `cfg(has_kernels)` is unset, and asking for the CUDA device returns an error that says
//! how to get nvcc. A kernel that fails to compile fails the build, with nvcc's message.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_kernels)");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=GSURE_CUDA_ARCH");
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

    let mut consts = String::new();
    for src in &sources {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let ptx = out.join(format!("{stem}.ptx"));
        if have_nvcc {
            let output = Command::new(&nvcc)
                .args(["-ptx", "-O3", "-std=c++17", "-lineinfo"])
                .arg(format!("-arch={arch}"))
                .args(["-Ikernels", "-o"])
                .arg(&ptx)
                .arg(src)
                .output()
                .unwrap_or_else(|e| panic!("could not run {nvcc}: {e}"));
            if !output.status.success() {
                panic!(
                    "nvcc failed on {}:\n{}\n{}",
                    src.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        } else {
            fs::write(&ptx, "").unwrap();
        }
        consts.push_str(&format!(
            "pub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));\n",
            stem.to_uppercase()
        ));
    }
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
