//! IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed. The format: a big-endian u32 magic number
//! whose first two bytes are 0, third the element type (0x08 = unsigned byte, the only one these datasets
//! use) and fourth the number of dimensions; then one big-endian u32 per dimension; then the values, row
//! major. Images are 0x00000803 ([N, H, W]), labels 0x00000801 ([N]).
use super::{open_maybe_gz, read_maybe_gz, read_up_to, Imported};
use crate::data::transforms::Image;
use anyhow::{bail, Result};
use serde_json::{json, Map};
use std::path::Path;

pub const MAGIC_IMAGES: u32 = 0x0000_0803;
pub const MAGIC_LABELS: u32 = 0x0000_0801;

/// A parsed IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

const IMAGES_FIX: &str =
    "pass an IDX images file (e.g. train-images-idx3-ubyte or .gz) to --input and its labels file to --labels";
const LABELS_FIX: &str = "pass an IDX labels file (e.g. train-labels-idx1-ubyte or .gz) to --labels";

/// Parses IDX bytes read from `path`, which must carry `magic`.
pub fn parse(path: &Path, bytes: &[u8], magic: u32) -> Result<Idx> {
    let p = path.display();
    let dims = parse_header(path, bytes, magic)?;
    let header = 4 + 4 * dims.len();
    // Checked product: a corrupt header must not overflow into a small, plausible size.
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let body = bytes.len() - header;
    match count {
        Some(c) if c == body => {}
        Some(c) if c > body => bail!(
            "{p}: the header's dimension sizes {dims:?} need {c} data bytes but the file holds {body}; the file is truncated. Fix: download or re-create it"
        ),
        Some(c) => bail!(
            "{p}: the header's dimension sizes {dims:?} need {c} data bytes but the file holds {body}; the dimension sizes or the file are wrong. Fix: download or re-create it"
        ),
        None => bail!("{p}: the header's dimension sizes {dims:?} overflow; the header is corrupt. Fix: download or re-create it"),
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// The dimension sizes in the header at the start of `bytes` (which may hold more), checked: the magic
/// number, the header's length, no zero size.
fn parse_header(path: &Path, bytes: &[u8], magic: u32) -> Result<Vec<usize>> {
    let p = path.display();
    let fix = if magic == MAGIC_IMAGES { IMAGES_FIX } else { LABELS_FIX };
    let what = if magic == MAGIC_IMAGES {
        "images (unsigned bytes, 3 dimensions)"
    } else {
        "labels (unsigned bytes, 1 dimension)"
    };
    if bytes.len() < 4 {
        bail!(
            "{p}: {} bytes, too short for the IDX magic number; the file is truncated or not IDX. Fix: {fix}",
            bytes.len()
        );
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        let hint = match found {
            MAGIC_IMAGES => " (this is an IDX images file)",
            MAGIC_LABELS => " (this is an IDX labels file)",
            _ if bytes[0] == 0 && bytes[1] == 0 && bytes[2] != 0x08 => {
                " (IDX with a non-byte element type, which gsure does not read)"
            }
            _ => "",
        };
        bail!("{p}: magic number 0x{found:08x}{hint}; IDX {what} start with 0x{magic:08x}. Fix: {fix}");
    }
    let nd = (magic & 0xff) as usize;
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        bail!("{p}: {} bytes, too short for the IDX header ({header} bytes: magic and {nd} dimension sizes); the file is truncated. Fix: download or re-create it", bytes.len());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    if dims.contains(&0) {
        bail!("{p}: dimension sizes {dims:?} hold no values. Fix: {fix}");
    }
    Ok(dims)
}

/// Reads an IDX file (gzip-compressed or not) that must carry `magic`.
pub fn read_file(path: &Path, magic: u32) -> Result<Idx> {
    parse(path, &read_maybe_gz(path)?, magic)
}

/// Reads an IDX file's header, then the bytes of its first `limit` items only (all without a limit), so a
/// small compressed file that inflates to gigabytes costs what is kept, never more. The returned `dims`
/// are the header's (dims[0] is the file's item count); `data` holds the kept items. Memory for the kept
/// items and the copies an import makes of them is checked before they are read.
pub fn read_file_limited(path: &Path, magic: u32, limit: Option<usize>) -> Result<Idx> {
    let p = path.display();
    let mut reader = open_maybe_gz(path)?;
    let header_len = 4 + 4 * (magic & 0xff) as usize;
    let head = read_up_to(&mut reader, header_len, path)?;
    let dims = parse_header(path, &head, magic)?;
    let n = dims[0];
    let keep = limit.map_or(n, |l| l.min(n));
    let item = dims[1..].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(need) = item.and_then(|i| i.checked_mul(keep)).filter(|&b| b as u64 <= super::MAX_BYTES) else {
        bail!(
            "{p}: the header's dimension sizes {dims:?} make {keep} items larger than {} GiB, which gsure refuses. Fix: download or re-create the file, or lower --limit",
            super::MAX_BYTES >> 30
        );
    };
    // The bytes, their f32 images, the dataset array and the serialised file: 13 bytes per byte kept.
    crate::io::budget::check_fits(
        &format!("{p}: importing {keep} of its {n} items"),
        13 * need as u128,
        "lower --limit",
    )?;
    let data = read_up_to(&mut reader, need, path)?;
    if data.len() < need {
        bail!(
            "{p}: the header's dimension sizes {dims:?} need {need} data bytes for {keep} items but the file holds {}; the file is truncated. Fix: download or re-create it",
            data.len()
        );
    }
    if keep == n && !read_up_to(&mut reader, 1, path)?.is_empty() {
        bail!(
            "{p}: the file holds more data than the header's dimension sizes {dims:?} say; the dimension sizes or the file are wrong. Fix: download or re-create it"
        );
    }
    Ok(Idx { dims, data })
}

/// Images (and labels) from IDX files: pixels 0..255 become -1..1, labels class ids.
pub fn read(images: &Path, labels: Option<&Path>, limit: Option<usize>) -> Result<Imported> {
    let im = read_file_limited(images, MAGIC_IMAGES, limit)?;
    let (n, h, w) = (im.dims[0], im.dims[1], im.dims[2]);
    let keep = limit.map_or(n, |l| l.min(n));
    let labels = match labels {
        Some(lp) => {
            let lb = read_file_limited(lp, MAGIC_LABELS, limit)?;
            if lb.dims[0] != n {
                bail!(
                    "{}: {} labels but {} holds {n} images; they must match. Fix: pass the labels file that belongs to these images",
                    lp.display(),
                    lb.dims[0],
                    images.display()
                );
            }
            Some(lb.data[..keep].iter().map(|&v| v as f32).collect::<Vec<f32>>())
        }
        None => None,
    };
    let m = h * w;
    let imgs = (0..keep)
        .map(|i| Image {
            data: im.data[i * m..(i + 1) * m].iter().map(|&v| v as f32 / 127.5 - 1.0).collect(),
            c: 1,
            h,
            w,
        })
        .collect();
    let mut extra = Map::new();
    extra.insert("source_dims".into(), json!([n, h, w]));
    if let Some(l) = &labels {
        let classes = l.iter().fold(0f32, |a, &b| a.max(b)) as usize + 1;
        extra.insert("classes".into(), json!(classes));
    }
    let name = images.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    Ok(Imported { images: imgs, labels, source: format!("idx:{name}"), extra })
}

/// Encodes an IDX array of unsigned bytes (for tests and converters): magic 0x000008NN, sizes, data.
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
