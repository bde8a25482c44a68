//! Writes a grid of the built-in phantoms: `cargo run --example phantom_grid -- OUT.png [SIZE]`.
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).map(String::as_str).unwrap_or("phantoms.png");
    let size = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let set = gsure::data::phantoms(16, size, 1234);
    gsure::io::image::grid_png(std::path::Path::new(out), &set.images, set.dims, -1.0, 1.0)
}
