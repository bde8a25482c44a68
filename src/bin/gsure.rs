//! The gsure command line: thin; all work is done by the library.
use anyhow::Result;
use clap::{Parser, Subcommand};

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
    }
    Ok(())
}
