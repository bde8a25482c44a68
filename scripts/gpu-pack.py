#!/usr/bin/env python3
"""Packs gpu-bin/ small enough to carry to the GPU machine, and unpacks it there (used by scripts/gpu-check).

Every executable embeds every kernel module twice over (its PTX, and its fatbin: SASS plus PTX), 20-odd MiB
that are the same bytes in all of them and would cost megabytes each even compressed. So the pack holds
each module once and each executable with those byte ranges cut out:

    pack DIR BLOB_DIR ARCHIVE   cuts every file in BLOB_DIR (build.rs's OUT_DIR: *.ptx, *.fatbin) out of the
                                executables listed in DIR/MANIFEST.tsv, and writes ARCHIVE (tar.xz) holding
                                DIR/MANIFEST.tsv, DIR/COMMIT, DIR/CUTS.json, DIR/kernels/<blob> and
                                DIR/<exe>.cut
    unpack ARCHIVE              extracts ARCHIVE and splices the blobs back: DIR/<exe>, checked against the
                                SHA-256 recorded at packing
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import time

MIN_BLOB = 4096  # smaller modules are not worth a cut


def find_all(data, blob):
    out, i = [], data.find(blob)
    while i >= 0:
        out.append(i)
        i = data.find(blob, i + len(blob))
    return out


def pack(bin_dir, blob_dir, archive):
    t0 = time.time()
    blobs = {}
    for name in sorted(os.listdir(blob_dir)):
        path = os.path.join(blob_dir, name)
        if os.path.isfile(path) and name.endswith((".ptx", ".fatbin")):
            data = open(path, "rb").read()
            if len(data) >= MIN_BLOB:
                blobs[name] = data
    # Largest first, so a blob contained in another (none today) is cut as part of the larger one.
    order = sorted(blobs, key=lambda n: -len(blobs[n]))
    exes = [line.split("\t")[0] for line in open(os.path.join(bin_dir, "MANIFEST.tsv")) if not line.startswith("#")]
    cuts, used = {}, set()
    members = []  # (name in archive, bytes)
    raw = cut_total = 0
    for exe in exes:
        data = open(os.path.join(bin_dir, exe), "rb").read()
        raw += len(data)
        spans = []
        for name in order:
            for off in find_all(data, blobs[name]):
                end = off + len(blobs[name])
                if any(off < e and s < end for s, e, _ in spans):
                    continue
                spans.append((off, end, name))
                used.add(name)
        spans.sort()
        pieces, pos = [], 0
        for s, e, _ in spans:
            pieces.append(data[pos:s])
            pos = e
        pieces.append(data[pos:])
        body = b"".join(pieces)
        cut_total += len(body)
        cuts[exe] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "spans": [[s, name] for s, _, name in spans],
        }
        members.append((f"{exe}.cut", body))
    base = os.path.basename(os.path.normpath(bin_dir))
    with tarfile.open(archive, "w:xz", preset=6) as tar:

        def add(name, data):
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))

        for name in ("MANIFEST.tsv", "COMMIT"):
            add(name, open(os.path.join(bin_dir, name), "rb").read())
        add("CUTS.json", json.dumps(cuts, indent=1).encode())
        for name in sorted(used):
            add(f"kernels/{name}", blobs[name])
        for name, body in members:
            add(name, body)
    blob_bytes = sum(len(blobs[n]) for n in used)
    print(
        f"packed {len(exes)} executables, {raw >> 20} MiB: {cut_total >> 20} MiB after cutting out "
        f"{len(used)} kernel modules ({blob_bytes >> 20} MiB, kept once); {archive}: "
        f"{os.path.getsize(archive) >> 20} MiB ({os.path.getsize(archive)} bytes) in {time.time() - t0:.0f} s"
    )


def unpack(archive):
    t0 = time.time()
    with tarfile.open(archive, "r:xz") as tar:
        names = tar.getnames()
        base = names[0].split("/")[0]
        if any(n.split("/")[0] != base or ".." in n.split("/") or n.startswith("/") for n in names):
            sys.exit(f"gpu-pack: unexpected member names in {archive}")
        try:
            tar.extractall(".", filter="data")
        except TypeError:  # Python before 3.11.4
            tar.extractall(".")
    cuts = json.load(open(os.path.join(base, "CUTS.json")))
    blobs = {}
    bad = 0
    for exe, c in cuts.items():
        body = open(os.path.join(base, exe + ".cut"), "rb").read()
        out, pos = bytearray(), 0
        for off, name in c["spans"]:
            if name not in blobs:
                blobs[name] = open(os.path.join(base, "kernels", name), "rb").read()
            take = off - len(out)
            out += body[pos : pos + take]
            pos += take
            out += blobs[name]
        out += body[pos:]
        if len(out) != c["size"] or hashlib.sha256(out).hexdigest() != c["sha256"]:
            print(f"gpu-pack: {exe} does not match its checksum after unpacking", file=sys.stderr)
            bad += 1
            continue
        path = os.path.join(base, exe)
        with open(path, "wb") as f:
            f.write(out)
        os.chmod(path, 0o755)
        os.remove(os.path.join(base, exe + ".cut"))
    # Newer than the archive from now on: scripts/gpu-check unpacks again only a newer pack.
    os.utime(os.path.join(base, "MANIFEST.tsv"))
    print(f"unpacked {len(cuts)} executables into {base}/ in {time.time() - t0:.1f} s")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "pack":
        pack(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "unpack":
        unpack(sys.argv[2])
    else:
        sys.exit(__doc__)
