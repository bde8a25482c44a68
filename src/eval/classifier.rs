//! A small CNN classifier trained by the engine on a clean labelled training set (MNIST, Fashion-MNIST),
//! whose 128-d penultimate activations are the features of the Fréchet distance (no Inception weights
//! offline). Architecture: conv 3×3 → 32, SiLU, avg-pool 2× → conv 3×3 → 64, SiLU, avg-pool 2× → flatten →
//! linear 128, SiLU (the features) → linear K (logits). Trained once with cross-entropy and AdamW, then
//! cached as a safetensors file next to the training set.
use crate::autograd::Node;
use crate::io::safetensors::{self as st, Entry};
use crate::nn::{Conv2d, Init, Linear};
use crate::ops::optim::{AdamConfig, AdamW};
use crate::ops::{self, layout};
use crate::{backward, no_grad, DType, Device, ParamStore, Tensor};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Width of the feature layer.
pub const FEATURES: usize = 128;
/// Bumped when the architecture or the training recipe changes, so stale caches are retrained.
pub const ARCH: &str = "cnn-c32-c64-f128-v1";

/// Mean cross-entropy of `logits` [B, K] against class ids `labels` (B of them, each < K), shape [1].
/// Log-softmax is computed stably on the host (max subtracted); the gradient is (softmax − onehot) / B.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let (b, k) = logits.shape().matrix("cross_entropy")?;
    if labels.len() != b {
        bail!("cross_entropy: {} labels for logits of shape {}", labels.len(), logits.shape());
    }
    if let Some(&bad) = labels.iter().find(|&&y| y >= k) {
        bail!("cross_entropy: label {bad} for logits of shape {} ({k} classes)", logits.shape());
    }
    if b == 0 {
        bail!("cross_entropy: empty batch (logits of shape {})", logits.shape());
    }
    let z = logits.to_vec_f64()?;
    let mut probs = vec![0.0; b * k];
    let mut loss = 0.0;
    for i in 0..b {
        let row = &z[i * k..(i + 1) * k];
        let mx = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = row.iter().map(|&v| (v - mx).exp()).sum();
        let lse = mx + sum.ln();
        loss += lse - row[labels[i]];
        for j in 0..k {
            probs[i * k + j] = (row[j] - lse).exp();
        }
    }
    let out = Tensor::from_f64(&[loss / b as f64], [1], logits.dtype(), logits.device())?;
    let labels = labels.to_vec();
    let (dtype, device) = (logits.dtype(), logits.device().clone());
    Ok(out.with_node(Node::record("cross_entropy", &[logits], move |g| {
        let gs = g.item()? / b as f64;
        let mut d = probs.clone();
        for (i, &y) in labels.iter().enumerate() {
            d[i * k + y] -= 1.0;
        }
        d.iter_mut().for_each(|v| *v *= gs);
        Ok(vec![Some(Tensor::from_f64(&d, [b, k], dtype, &device)?)])
    })))
}

pub struct Classifier {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pub params: ParamStore,
    /// Input [C, H, W] (H and W multiples of 4) and number of classes.
    pub input: [usize; 3],
    pub classes: usize,
}

impl Classifier {
    pub fn new(input: [usize; 3], classes: usize, seed: u64, device: &Device) -> Result<Classifier> {
        let [c, h, w] = input;
        if h % 4 != 0 || w % 4 != 0 || h == 0 || w == 0 {
            bail!("classifier: images of {h}×{w}; the two 2× poolings need sides that are multiples of 4");
        }
        if classes < 2 {
            bail!("classifier: {classes} classes; at least 2 are needed");
        }
        let mut params = ParamStore::new();
        let mut init = Init::new(&mut params, seed, device, DType::F32);
        let conv1 = Conv2d::new(&mut init, "conv1", c, 32, 3, 1)?;
        let conv2 = Conv2d::new(&mut init, "conv2", 32, 64, 3, 1)?;
        let fc1 = Linear::new(&mut init, "fc1", 64 * (h / 4) * (w / 4), FEATURES)?;
        let fc2 = Linear::new(&mut init, "fc2", FEATURES, classes)?;
        Ok(Classifier { conv1, conv2, fc1, fc2, params, input, classes })
    }

    /// (features [B, 128], logits [B, K]) of images [B, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.dims()[0];
        let h = layout::avg_pool2x(&ops::silu(&self.conv1.forward(x)?)?)?;
        let h = layout::avg_pool2x(&ops::silu(&self.conv2.forward(&h)?)?)?;
        let flat = h.reshape([b, h.numel() / b.max(1)])?;
        let f = ops::silu(&self.fc1.forward(&flat)?)?;
        let logits = self.fc2.forward(&f)?;
        Ok((f, logits))
    }

    /// Features [n, 128] and predicted classes of host images [n, C, H, W], in batches, without gradients.
    pub fn features(&self, images: &[f32], n: usize, batch: usize, device: &Device) -> Result<(Vec<f32>, Vec<usize>)> {
        let [c, h, w] = self.input;
        let m = c * h * w;
        if images.len() != n * m {
            bail!("classifier: {} values for {n} images of {c}×{h}×{w}", images.len());
        }
        let mut feats = Vec::with_capacity(n * FEATURES);
        let mut preds = Vec::with_capacity(n);
        no_grad(|| -> Result<()> {
            for start in (0..n).step_by(batch.max(1)) {
                let b = batch.max(1).min(n - start);
                let x = Tensor::from_f32(&images[start * m..(start + b) * m], [b, c, h, w], device)?;
                let (f, logits) = self.forward(&x)?;
                feats.extend(f.to_vec_f32()?);
                let z = logits.to_vec_f32()?;
                for row in z.chunks(self.classes) {
                    let arg = (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best });
                    preds.push(arg);
                }
            }
            Ok(())
        })?;
        Ok((feats, preds))
    }

    pub fn save(&self, path: &Path, meta: &serde_json::Value) -> Result<()> {
        let owned: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .params
            .iter()
            .map(|(n, p)| Ok((n.clone(), p.dims().to_vec(), p.to_vec_f32()?)))
            .collect::<Result<_>>()?;
        let entries: Vec<Entry> =
            owned.iter().map(|(n, s, d)| Entry { name: n.clone(), shape: s.clone(), data: d }).collect();
        st::write(path, &entries, meta)
    }

    pub fn load_weights(&self, file: &st::File) -> Result<()> {
        for (name, p) in self.params.iter() {
            if !file.contains(name) {
                bail!("classifier cache {} lacks tensor {name:?}", file.path().display());
            }
            let (shape, values) = file.f32(name)?;
            if shape != p.dims() {
                bail!(
                    "classifier cache {}: tensor {name:?} has shape {shape:?}, expected {}",
                    file.path().display(),
                    p.shape()
                );
            }
            p.assign(&Tensor::from_f32(&values, shape, p.device())?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifierOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions { steps: 600, batch: 64, lr: 2e-3, seed: 0 }
    }
}

/// Class ids from a dataset's f32 labels; refuses negative or fractional values.
pub fn class_ids(labels: &[f32]) -> Result<(Vec<usize>, usize)> {
    let mut ids = Vec::with_capacity(labels.len());
    for (i, &l) in labels.iter().enumerate() {
        if !(l >= 0.0 && l.fract() == 0.0) {
            bail!("label {i} is {l}; class ids must be non-negative integers");
        }
        ids.push(l as usize);
    }
    let classes = ids.iter().max().map_or(0, |&m| m + 1);
    Ok((ids, classes))
}

/// Trains the classifier with AdamW (learning rate constant, then linearly to 0 over the second half),
/// drawing each batch uniformly (seeded) from all `images` [n, C, H, W]. Returns the final training loss
/// as a running mean over the last 50 steps.
pub fn train(
    images: &[f32],
    dims: [usize; 4],
    labels: &[usize],
    classes: usize,
    opts: &ClassifierOptions,
    device: &Device,
    mut progress: impl FnMut(usize, f64),
) -> Result<(Classifier, f64)> {
    let [n, c, h, w] = dims;
    let m = c * h * w;
    if images.len() != n * m || labels.len() != n || n == 0 {
        bail!("classifier training: {} values and {} labels for images of shape {dims:?}", images.len(), labels.len());
    }
    let net = Classifier::new([c, h, w], classes, opts.seed, device)?;
    let mut opt = AdamW::new(AdamConfig { lr: opts.lr, ..AdamConfig::default() }, &net.params)?;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0xc1a5_5f1e);
    let mut recent = std::collections::VecDeque::new();
    for step in 0..opts.steps {
        let idx: Vec<usize> = (0..opts.batch).map(|_| rng.random_range(0..n)).collect();
        let mut x = Vec::with_capacity(opts.batch * m);
        for &i in &idx {
            x.extend_from_slice(&images[i * m..(i + 1) * m]);
        }
        let y: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        let x = Tensor::from_f32(&x, [opts.batch, c, h, w], device)?;
        let (_, logits) = net.forward(&x)?;
        let loss = cross_entropy(&logits, &y)?;
        let lv = loss.item()?;
        if !lv.is_finite() {
            bail!("classifier training: the loss became {lv} at step {step}");
        }
        let grads = backward(&loss)?;
        let half = opts.steps / 2;
        let lr = if step < half { opts.lr } else { opts.lr * (opts.steps - step) as f64 / (opts.steps - half) as f64 };
        no_grad(|| opt.step(&net.params, &grads, lr, 1.0))?;
        recent.push_back(lv);
        if recent.len() > 50 {
            recent.pop_front();
        }
        progress(step + 1, lv);
    }
    let final_loss = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    Ok((net, final_loss))
}

/// Where the classifier trained on `train_file` is cached: `<train_file stem>.classifier.safetensors`.
pub fn cache_path(train_file: &Path) -> PathBuf {
    let stem = train_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    train_file.with_file_name(format!("{stem}.classifier.safetensors"))
}

/// FNV-1a over the labels and 64 evenly spaced images: tells a re-imported training set from the one a
/// cached classifier learned, without reading the whole file.
fn fingerprint(ds: &crate::data::dataset::CleanDataset, labels: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: f32| {
        for b in v.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    labels.iter().for_each(|&v| eat(v));
    let n = ds.len();
    let picks: Vec<usize> = (0..64.min(n)).map(|k| k * n / 64.min(n)).collect();
    ds.gather(&picks).into_iter().for_each(&mut eat);
    format!("{h:016x}")
}

/// What identifies a cached classifier: architecture, recipe, and the training set it came from.
fn cache_key(
    train_file: &Path,
    dims: [usize; 4],
    classes: usize,
    opts: &ClassifierOptions,
    fingerprint: &str,
) -> serde_json::Value {
    let bytes = std::fs::metadata(train_file).map(|m| m.len()).unwrap_or(0);
    serde_json::json!({
        "kind": "classifier", "arch": ARCH, "input": &dims[1..], "classes": classes,
        "train_count": dims[0], "train_bytes": bytes, "fingerprint": fingerprint, "options": opts,
    })
}

/// The classifier of `train_file` (a clean dataset with labels): loaded from its cache when the cache
/// matches (architecture, options, training set), else trained on `device` and cached. Returns the network
/// and whether it was trained now.
pub fn load_or_train(
    train_file: &Path,
    opts: &ClassifierOptions,
    device: &Device,
    progress: impl FnMut(usize, f64),
) -> Result<(Classifier, bool)> {
    let ds = crate::data::dataset::CleanDataset::open(train_file)?;
    let labels = ds.labels().with_context(|| {
        format!(
            "{} has no labels; the Fréchet distance needs a labelled clean training set (import with --labels)",
            train_file.display()
        )
    })?;
    let (ids, classes) = class_ids(&labels).with_context(|| format!("{}", train_file.display()))?;
    let dims = ds.dims();
    let key = cache_key(train_file, dims, classes, opts, &fingerprint(&ds, &labels));
    let cache = cache_path(train_file);
    if cache.exists() {
        if let Ok(file) = st::File::open(&cache) {
            let matches = ["kind", "arch", "input", "classes", "train_count", "train_bytes", "fingerprint", "options"]
                .iter()
                .all(|k| file.meta().get(*k) == key.get(*k));
            if matches {
                let net = Classifier::new([dims[1], dims[2], dims[3]], classes, opts.seed, device)?;
                net.load_weights(&file)?;
                return Ok((net, false));
            }
        }
    }
    let images = ds.images();
    let (net, final_loss) = train(&images.images, dims, &ids, classes, opts, device, progress)?;
    let mut meta = key;
    meta["final_train_loss"] = serde_json::json!(final_loss);
    net.save(&cache, &meta).with_context(|| format!("caching the classifier at {}", cache.display()))?;
    Ok((net, true))
}
