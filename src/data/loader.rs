//! Batches from a dataset: seeded shuffling (the same order for the same (seed, epoch), whatever happened
//! before), batching, and prefetch of the next batches on a background thread through a bounded channel.
//! Batches are host arrays (Vec<f32> + dims) that the trainer uploads.
use super::dataset::{CleanDataset, CorruptedDataset};
use super::ImageSet;
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One named host array of a batch, [B, ...] (labels are [B]).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: &'static str,
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
}

/// A batch: which items (dataset indices), from which epoch, and their arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Position of this batch in its epoch.
    pub index: usize,
    pub indices: Vec<usize>,
    pub tensors: Vec<HostTensor>,
}

impl Batch {
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Something batches can be drawn from: N items, each a set of named arrays.
pub trait Source: Send + Sync + 'static {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The arrays of the items at `indices`.
    fn gather(&self, indices: &[usize]) -> Vec<HostTensor>;
}

fn batch_dims(b: usize, d: [usize; 4]) -> Vec<usize> {
    vec![b, d[1], d[2], d[3]]
}

impl Source for ImageSet {
    fn len(&self) -> usize {
        self.dims[0]
    }
    fn gather(&self, idx: &[usize]) -> Vec<HostTensor> {
        vec![HostTensor { name: "clean", data: ImageSet::gather(self, idx), dims: batch_dims(idx.len(), self.dims) }]
    }
}

impl Source for CleanDataset {
    fn len(&self) -> usize {
        CleanDataset::len(self)
    }
    fn gather(&self, idx: &[usize]) -> Vec<HostTensor> {
        let mut out = vec![HostTensor {
            name: "clean",
            data: CleanDataset::gather(self, idx),
            dims: batch_dims(idx.len(), self.dims()),
        }];
        if let Some(l) = self.gather_labels(idx) {
            out.push(HostTensor { name: "labels", data: l, dims: vec![idx.len()] });
        }
        out
    }
}

impl Source for CorruptedDataset {
    fn len(&self) -> usize {
        CorruptedDataset::len(self)
    }
    fn gather(&self, idx: &[usize]) -> Vec<HostTensor> {
        let b = idx.len();
        let mut out = vec![
            HostTensor { name: "y", data: self.gather_y(idx), dims: batch_dims(b, self.y_dims()) },
            HostTensor { name: "mask", data: self.gather_mask(idx), dims: batch_dims(b, self.mask_dims()) },
        ];
        if let (Some(c), Some(d)) = (self.gather_clean(idx), self.clean_dims()) {
            out.push(HostTensor { name: "clean", data: c, dims: batch_dims(b, d) });
        }
        out
    }
}

/// How batches are drawn.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch: usize,
    /// Shuffle each epoch (seeded by (seed, epoch)); in order otherwise.
    pub shuffle: bool,
    pub seed: u64,
    /// Drop the last, smaller batch of an epoch.
    pub drop_last: bool,
    /// How many batches the background thread prepares ahead (the channel's bound), at least 1.
    pub prefetch: usize,
    /// Stop after this many epochs (None: never).
    pub epochs: Option<u64>,
    /// Start at this epoch and batch within it (to resume a run where it stopped).
    pub start_epoch: u64,
    pub start_batch: usize,
}

impl LoaderOptions {
    pub fn new(batch: usize, seed: u64) -> Self {
        LoaderOptions {
            batch,
            shuffle: true,
            seed,
            drop_last: false,
            prefetch: 2,
            epochs: None,
            start_epoch: 0,
            start_batch: 0,
        }
    }
}

/// The order of the items in `epoch`: a permutation of 0..n that depends only on (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    // Mix the epoch into the seed (splitmix64 constant) so that consecutive epochs are unrelated streams.
    let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Batches in order, prepared on a background thread; iterate to get them. Dropping the loader stops the
/// thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    batches_per_epoch: usize,
}

impl Loader {
    pub fn new(source: Arc<dyn Source>, opts: LoaderOptions) -> Result<Loader> {
        let n = source.len();
        if opts.batch == 0 {
            bail!("data loader: batch size 0; it must be at least 1");
        }
        if n == 0 {
            bail!("data loader: the dataset holds no items");
        }
        if opts.drop_last && opts.batch > n {
            bail!(
                "data loader: batch size {} with drop_last over {n} items would yield no batch; use a smaller batch",
                opts.batch
            );
        }
        let per_epoch = if opts.drop_last { n / opts.batch } else { n.div_ceil(opts.batch) };
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let handle = std::thread::Builder::new().name("gsure-loader".into()).spawn(move || {
            let mut epoch = opts.start_epoch;
            let mut first = opts.start_batch;
            loop {
                if opts.epochs.is_some_and(|e| epoch >= e) {
                    return;
                }
                let order = if opts.shuffle { epoch_order(n, opts.seed, epoch) } else { (0..n).collect() };
                for index in first..per_epoch {
                    let lo = index * opts.batch;
                    let indices = order[lo..(lo + opts.batch).min(n)].to_vec();
                    let tensors = source.gather(&indices);
                    // A send fails only when the loader was dropped: stop quietly.
                    if tx.send(Batch { epoch, index, indices, tensors }).is_err() {
                        return;
                    }
                }
                first = 0;
                epoch += 1;
            }
        })?;
        Ok(Loader { rx: Some(rx), handle: Some(handle), batches_per_epoch: per_epoch })
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }
}

impl Iterator for Loader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        match self.rx.as_ref()?.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                // The thread has ended: after its last epoch, or by a panic, which is re-raised here rather
                // than passed off as the end of the data.
                self.rx.take();
                if let Some(Err(panic)) = self.handle.take().map(|h| h.join()) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver first makes the thread's pending send fail, so the join cannot block.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
