//! File formats: safetensors (checkpoints, datasets, samples; readable from Python with
//! `safetensors.numpy.load_file`) and PNG (sample grids, plots).
pub mod font;
pub mod image;
pub mod safetensors;
