//! File formats: safetensors (checkpoints, datasets, samples; readable from Python with
//! `safetensors.numpy.load_file`) and PNG (sample grids; charts through `plot`).
pub mod budget;
pub mod image;
pub mod outputs;
pub mod plot;
pub mod safetensors;
