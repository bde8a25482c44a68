//! Moving data between layouts without arithmetic on values: channel concat and split (U-Net skip
//! connections), nearest 2x upsampling and 2x2 average pooling (the U-Net's resolution changes).
//!
//! Split is built from `narrow_channels`, whose backward pads the gradient back into zeros of the input's
//! shape; when several outputs of one split receive gradients, the tape adds the padded pieces up.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::backend::cuda::CudaStorage;
use crate::cpu_map;
use crate::ops::compute;
use crate::tensor::{CpuStorage, Shape, Tensor};
use anyhow::{bail, Result};

/// (rows, inner): a tensor [N, C, ...] viewed around axis 1 as N rows of C * inner elements.
fn around_channels(op: &str, x: &Tensor) -> Result<(usize, usize)> {
    if x.shape().rank() < 2 {
        bail!("{op}: expected a tensor [N, C, ...] of rank >= 2, got shape {}", x.shape());
    }
    let (rows, _, inner) = x.shape().split_at_axis(1);
    Ok((rows, inner))
}

fn slices<'a, T>(s: &[&'a CpuStorage], pick: impl Fn(&'a CpuStorage) -> &'a [T]) -> Vec<&'a [T]> {
    s.iter().map(|&st| pick(st)).collect()
}

fn concat_raw(xs: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = xs.first() else { bail!("concat_channels: needs at least one tensor, got none") };
    let (rows, inner) = around_channels("concat_channels", first)?;
    for (i, x) in xs.iter().enumerate().skip(1) {
        first.check_same_kind(x, "concat_channels")?;
        let (a, b) = (first.dims(), x.dims());
        if a.len() != b.len() || a[0] != b[0] || a[2..] != b[2..] {
            bail!(
                "concat_channels: input {i} has shape {} but input 0 has shape {}; every axis but 1 must match",
                x.shape(),
                first.shape()
            );
        }
    }
    let channels: Vec<usize> = xs.iter().map(|x| x.dims()[1]).collect();
    let row_lens: Vec<usize> = channels.iter().map(|c| c * inner).collect();
    let total_c: usize = channels.iter().sum();
    let mut dims = first.dims().to_vec();
    dims[1] = total_c;
    compute(
        "concat_channels",
        xs,
        dims,
        |s| {
            Ok(match s[0] {
                CpuStorage::F32(_) => CpuStorage::F32(cpu::concat(
                    &slices(s, |st| match st {
                        CpuStorage::F32(v) => v.as_slice(),
                        _ => unreachable!("dtypes were checked"),
                    }),
                    rows,
                    &row_lens,
                )),
                CpuStorage::F64(_) => CpuStorage::F64(cpu::concat(
                    &slices(s, |st| match st {
                        CpuStorage::F64(v) => v.as_slice(),
                        _ => unreachable!("dtypes were checked"),
                    }),
                    rows,
                    &row_lens,
                )),
            })
        },
        |gpu, s| {
            let row = total_c * inner;
            let out = CudaStorage::alloc(gpu, s[0].dtype(), rows * row)?;
            let mut off = 0;
            for (st, &len) in s.iter().zip(&row_lens) {
                cuda::channel_copy(gpu, st, &out, rows, len, len, 0, row, off)?;
                off += len;
            }
            Ok(out)
        },
    )
}

/// Channels [start, start + len) of x (no autograd).
fn narrow_raw(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let (rows, inner) = around_channels("narrow_channels", x)?;
    let c = x.dims()[1];
    if start.checked_add(len).is_none_or(|end| end > c) {
        bail!("narrow_channels: channels {start}..{start}+{len} out of range for shape {}", x.shape());
    }
    let mut dims = x.dims().to_vec();
    dims[1] = len;
    let (row, off, run) = (c * inner, start * inner, len * inner);
    compute(
        "narrow_channels",
        &[x],
        dims,
        |s| Ok(cpu_map!(s[0], |v| cpu::narrow(v, rows, row, off, run))),
        |gpu, s| {
            let out = CudaStorage::alloc(gpu, s[0].dtype(), rows * run)?;
            cuda::channel_copy(gpu, s[0], &out, rows, run, row, off, run, 0)?;
            Ok(out)
        },
    )
}

/// g (channels [start, start + C_g) of a tensor of `shape`) placed into zeros of `shape` (no autograd).
fn pad_raw(g: &Tensor, shape: &Shape, start: usize) -> Result<Tensor> {
    let (rows, _, inner) = shape.split_at_axis(1);
    let (row, off, run) = (shape.dim(1) * inner, start * inner, g.dims()[1] * inner);
    compute(
        "pad_channels",
        &[g],
        shape.clone(),
        |s| Ok(cpu_map!(s[0], |v| cpu::pad(v, rows, row, off, run))),
        |gpu, s| {
            let out = CudaStorage::zeros(gpu, s[0].dtype(), rows * row)?;
            cuda::channel_copy(gpu, s[0], &out, rows, run, run, 0, row, off)?;
            Ok(out)
        },
    )
}

/// Concatenation along axis 1 of tensors [N, C_i, ...] that agree on every other axis: [N, sum C_i, ...].
pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let out = concat_raw(xs)?;
    let channels: Vec<usize> = xs.iter().map(|x| x.dims()[1]).collect();
    let needs: Vec<bool> = xs.iter().map(|x| x.tracks_grad()).collect();
    Ok(out.with_node(Node::record("concat_channels", xs, move |g| {
        let mut start = 0;
        let mut grads = Vec::with_capacity(channels.len());
        for (&c, &need) in channels.iter().zip(&needs) {
            grads.push(if need { Some(narrow_raw(g, start, c)?) } else { None });
            start += c;
        }
        Ok(grads)
    })))
}

/// Channels [start, start + len) of x [N, C, ...]; backward pads the gradient back with zeros.
pub fn narrow_channels(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let out = narrow_raw(x, start, len)?;
    let shape = x.shape().clone();
    Ok(out.with_node(Node::record("narrow_channels", &[x], move |g| Ok(vec![Some(pad_raw(g, &shape, start)?)]))))
}

/// The inverse of [`concat_channels`]: x [N, C, ...] cut along axis 1 into pieces of `sizes` channels
/// (which must add up to C).
pub fn split_channels(x: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
    around_channels("split_channels", x)?;
    let total: usize = sizes.iter().sum();
    if total != x.dims()[1] {
        bail!(
            "split_channels: sizes {sizes:?} add up to {total}, but shape {} has {} channels",
            x.shape(),
            x.dims()[1]
        );
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for &len in sizes {
        out.push(narrow_channels(x, start, len)?);
        start += len;
    }
    Ok(out)
}

fn upsample_raw(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.shape().nchw("upsample_nearest2x")?;
    let planes = n * c;
    compute(
        "upsample_nearest2x",
        &[x],
        [n, c, 2 * h, 2 * w],
        |s| Ok(cpu_map!(s[0], |v| cpu::upsample2x(v, planes, h, w, scale))),
        |gpu, s| cuda::upsample2x(gpu, s[0], planes, h, w, scale),
    )
}

fn pool_raw(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.shape().nchw("avg_pool2x")?;
    if h % 2 != 0 || w % 2 != 0 {
        bail!("avg_pool2x: height and width must be even, got shape {}", x.shape());
    }
    let (planes, ho, wo) = (n * c, h / 2, w / 2);
    compute(
        "avg_pool2x",
        &[x],
        [n, c, ho, wo],
        |s| Ok(cpu_map!(s[0], |v| cpu::pool2x(v, planes, ho, wo, scale))),
        |gpu, s| cuda::pool2x(gpu, s[0], planes, ho, wo, scale),
    )
}

/// Nearest-neighbour 2x upsampling: [N, C, H, W] -> [N, C, 2H, 2W]. Backward sums each 2x2 block.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let out = upsample_raw(x, 1.0)?;
    Ok(out.with_node(Node::record("upsample_nearest2x", &[x], |g| Ok(vec![Some(pool_raw(g, 1.0)?)]))))
}

/// 2x2 average pooling with stride 2: [N, C, H, W] (H, W even) -> [N, C, H/2, W/2]. Backward spreads a
/// quarter of each output gradient over its window.
pub fn avg_pool2x(x: &Tensor) -> Result<Tensor> {
    let out = pool_raw(x, 0.25)?;
    Ok(out.with_node(Node::record("avg_pool2x", &[x], |g| Ok(vec![Some(upsample_raw(g, 0.25)?)]))))
}
