#!/usr/bin/env python3
"""Converts the classic `mnist.pkl.gz` (a gzip-compressed Python pickle of ((train_x, train_y), (valid_x,
valid_y), (test_x, test_y)), images as float32 rows of 784 values k/256, labels int64) into the four IDX
files of the original MNIST distribution, gzip-compressed, which `gsure data import --format idx` reads:

  train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz   (train + valid: 60000, the original order)
  t10k-images-idx3-ubyte.gz,  t10k-labels-idx1-ubyte.gz    (test: 10000)

Usage: mnist-pkl-to-idx.py MNIST_PKL_GZ OUT_DIR
Needs numpy (to unpickle numpy arrays); everything else is the standard library.
"""
import gzip
import os
import pickle
import struct
import sys


def write_idx(path, dims, data: bytes):
    # IDX: magic 0x000008NN (unsigned bytes, N dimensions), big-endian u32 sizes, then the values.
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    tmp = path + ".tmp"
    with gzip.open(tmp, "wb") as f:
        f.write(header)
        f.write(data)
    os.replace(tmp, path)


def to_bytes(x, np):
    x = np.asarray(x, dtype=np.float64)
    # The pickle stores pixels as k/256 (max 255/256); older copies use k/255. Pick the scale that makes
    # the values integers, so the conversion is lossless.
    scale = 256.0 if x.max() <= 255.0 / 256.0 + 1e-6 else 255.0
    k = np.rint(x * scale)
    if np.abs(k - x * scale).max() > 1e-3:
        sys.exit(f"pixels are not multiples of 1/{int(scale)}; not the expected mnist.pkl.gz")
    return np.clip(k, 0, 255).astype(np.uint8)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    try:
        import numpy as np
    except ImportError:
        sys.exit("numpy is needed to unpickle mnist.pkl.gz (pip install numpy, or add a --target dir to PYTHONPATH)")
    with gzip.open(src, "rb") as f:
        # The file was pickled by Python 2: latin1 maps its byte strings back to numpy's buffers.
        train, valid, test = pickle.load(f, encoding="latin1")
    os.makedirs(out, exist_ok=True)
    parts = {
        "train": (np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])),
        "t10k": test,
    }
    for name, (x, y) in parts.items():
        x = to_bytes(x, np)
        n = x.shape[0]
        if x.shape[1] != 784 or len(y) != n:
            sys.exit(f"{name}: images {x.shape}, labels {len(y)}; expected [N, 784] and N labels")
        write_idx(os.path.join(out, f"{name}-images-idx3-ubyte.gz"), [n, 28, 28], x.tobytes())
        write_idx(os.path.join(out, f"{name}-labels-idx1-ubyte.gz"), [n], np.asarray(y, dtype=np.uint8).tobytes())
        print(f"{name}: {n} images")


if __name__ == "__main__":
    main()
