//! A step split at the bus: everything the host contributes to one step (the batch, every random draw,
//! the per-example coefficients, the dropout seed, the optimiser's schedule) is packed into one
//! [`HostBatch`] of 4-byte words, crosses to the device in one copy, and is unpacked there into the
//! [`DeviceBatch`] the step's device work reads. That work then depends on nothing else from the host, so
//! it is the same launches at every step and can be captured into a CUDA graph and replayed, with only the
//! words changing.
use crate::backend::cuda::{CudaStorage, Gpu, GpuBuf};
use crate::nn::TrainSeed;
use crate::tensor::{Shape, Storage};
use crate::{Device, Tensor};
use anyhow::{bail, Result};

/// What one entry of a batch is.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// f32 values of this shape.
    Values(Shape),
    /// A 64-bit seed (two words), read on the device where it lies.
    Seed,
}

/// One named entry and where its words start.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    name: String,
    offset: usize,
    kind: Kind,
}

/// The names, shapes and offsets of a batch's entries: equal layouts unpack into the same device work.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Layout {
    entries: Vec<Entry>,
    words: usize,
}

/// A step's host contribution, packed.
#[derive(Default)]
pub struct HostBatch {
    layout: Layout,
    words: Vec<u32>,
}

/// Entries start on 16-byte boundaries: seeds stay 8-byte aligned and every tensor's copy is aligned.
const ALIGN_WORDS: usize = 4;

impl HostBatch {
    pub fn new() -> HostBatch {
        HostBatch::default()
    }

    fn start(&mut self, name: &str, kind: Kind) -> Result<usize> {
        if self.layout.entries.iter().any(|e| e.name == name) {
            bail!("step batch: two entries named {name:?}");
        }
        let offset = self.words.len().next_multiple_of(ALIGN_WORDS);
        self.words.resize(offset, 0);
        self.layout.entries.push(Entry { name: name.to_owned(), offset, kind });
        Ok(offset)
    }

    /// Adds `values` as the f32 tensor `name` of `shape`.
    pub fn push_f32(&mut self, name: &str, shape: impl Into<Shape>, values: &[f32]) -> Result<()> {
        let shape = shape.into();
        if values.len() != shape.numel() {
            bail!("step batch: {} values for {name:?} of shape {shape}", values.len());
        }
        self.start(name, Kind::Values(shape))?;
        self.words.extend(values.iter().map(|v| v.to_bits()));
        self.layout.words = self.words.len();
        Ok(())
    }

    /// [`Self::push_f32`] from f64 values (rounded to f32, as `Tensor::from_f64` rounds them).
    pub fn push_f64(&mut self, name: &str, shape: impl Into<Shape>, values: &[f64]) -> Result<()> {
        self.push_f32(name, shape, &values.iter().map(|&v| v as f32).collect::<Vec<_>>())
    }

    /// Adds the 64-bit seed `name`.
    pub fn push_seed(&mut self, name: &str, seed: u64) -> Result<()> {
        self.start(name, Kind::Seed)?;
        self.words.extend([seed as u32, (seed >> 32) as u32]);
        self.layout.words = self.words.len();
        Ok(())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The packed words, as they cross to the device.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// The batch on `device`: on the CPU its tensors made from the words; on CUDA uploaded in one copy (from
    /// pageable memory, for a step run outside the trainer's staging) and unpacked.
    pub fn to_device(&self, device: &Device) -> Result<DeviceBatch> {
        match device {
            Device::Cpu => self.on_cpu(),
            Device::Cuda(gpu) => DeviceBatch::unpack(gpu, &self.layout, &gpu.upload(&self.words)?),
        }
    }

    fn on_cpu(&self) -> Result<DeviceBatch> {
        let mut out = DeviceBatch::default();
        for e in &self.layout.entries {
            match &e.kind {
                Kind::Values(shape) => {
                    let v: Vec<f32> =
                        self.words[e.offset..e.offset + shape.numel()].iter().map(|&w| f32::from_bits(w)).collect();
                    out.tensors.push((e.name.clone(), Tensor::from_f32(&v, shape.clone(), &Device::Cpu)?));
                }
                Kind::Seed => {
                    let seed = self.words[e.offset] as u64 | (self.words[e.offset + 1] as u64) << 32;
                    out.seeds.push((e.name.clone(), TrainSeed::Host(seed)));
                }
            }
        }
        Ok(out)
    }
}

/// A step's host contribution where its device work reads it.
#[derive(Default)]
pub struct DeviceBatch {
    tensors: Vec<(String, Tensor)>,
    seeds: Vec<(String, TrainSeed)>,
}

impl DeviceBatch {
    /// Unpacks `words` (laid out as `layout`) on the device: each tensor a device copy out of `words`, each
    /// seed the address of its words in `words`, which must outlive every use of the batch (the trainer's
    /// staging buffer, which lives as long as the trainer).
    pub fn unpack(gpu: &std::sync::Arc<Gpu>, layout: &Layout, words: &GpuBuf<u32>) -> Result<DeviceBatch> {
        if words.len() < layout.words {
            bail!("step batch: {} words on the device for a layout of {}", words.len(), layout.words);
        }
        let mut out = DeviceBatch::default();
        for e in &layout.entries {
            match &e.kind {
                Kind::Values(shape) => {
                    let mut buf = gpu.alloc::<f32>(shape.numel())?;
                    if shape.numel() > 0 {
                        buf.copy_words_from(words, e.offset)?;
                    }
                    let t = Tensor::from_storage(
                        Storage::Cuda(CudaStorage::F32(buf)),
                        shape.clone(),
                        Device::Cuda(gpu.clone()),
                    )?;
                    out.tensors.push((e.name.clone(), t));
                }
                Kind::Seed => out.seeds.push((e.name.clone(), TrainSeed::Device(words.ptr() + 4 * e.offset as u64))),
            }
        }
        Ok(out)
    }

    /// A batch of tensors made where they are used, in any dtype: what an objective's loss reads when it
    /// is called outside the trainer with values it was given rather than drew.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> DeviceBatch {
        DeviceBatch { tensors: tensors.into_iter().collect(), seeds: Vec::new() }
    }

    /// The tensor `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        match self.tensors.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => Ok(t),
            None => bail!("step batch: no tensor {name:?} (the objective's draw and its loss disagree)"),
        }
    }

    /// The seed `name`.
    pub fn seed(&self, name: &str) -> Result<TrainSeed> {
        match self.seeds.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => Ok(*s),
            None => bail!("step batch: no seed {name:?}"),
        }
    }
}
