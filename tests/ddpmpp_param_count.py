#!/usr/bin/env python3
"""Parameter counts of EDM's SongUNet (NVlabs/edm training/networks.py) and of Ambient Diffusion's gated
variant (giannisdaras/ambient-diffusion), from the constructors' arithmetic alone (no torch needed).

It walks the same loops as SongUNet.__init__ with embedding_type='positional', encoder_type='standard',
decoder_type='standard' and counts what each module registers:
  Linear(i, o):          o*i weight + o bias
  Conv2d(i, o, k):       o*i*k*k weight + o bias (+ o*i*k*k gate_weight in the ambient code, gated=True)
  GroupNorm(c):          2c
  UNetBlock(i, o, emb):  norm0 GN(i), conv0 3x3, affine Linear(emb, o) (adaptive_scale=False), norm1 GN(o),
                         conv1 3x3, skip 1x1 when i != o or resampling (resample_proj=True),
                         attention: norm2 GN(o), qkv 1x1 (o -> 3o), proj 1x1.
The resample filter is a buffer, not a parameter.

Usage: python3 tests/ddpmpp_param_count.py   (prints the counts quoted in tests/ddpmpp.rs)
"""


def linear(i, o, bias=True):
    return o * i + (o if bias else 0)


def conv(i, o, k, gated):
    if k == 0:
        return 0
    w = o * i * k * k
    return w * (2 if gated else 1) + o


def gn(c):
    return 2 * c


def block(i, o, emb, attention, resample, gated):
    n = gn(i) + conv(i, o, 3, gated) + linear(emb, o) + gn(o) + conv(o, o, 3, gated)
    if o != i or resample:
        n += conv(i, o, 1, gated)
    if attention:
        n += gn(o) + conv(o, 3 * o, 1, gated) + conv(o, o, 1, gated)
    return n


def song_unet(res, cin_img, cout_img, ch=128, mult=(1, 2, 2, 2), mult_emb=4, blocks=4, attn=(16,),
              gated=False, label_dim=0, augment_dim=0):
    emb = ch * mult_emb
    noise = ch  # channel_mult_noise = 1
    n = 0
    if label_dim:
        n += linear(label_dim, noise)
    if augment_dim:
        n += linear(augment_dim, noise, bias=False)
    n += linear(noise, emb) + linear(emb, emb)
    skips = []
    cout = cin_img
    for level, m in enumerate(mult):
        r = res >> level
        if level == 0:
            n += conv(cout, ch, 3, gated)
            cout = ch
        else:
            n += block(cout, cout, emb, False, True, gated)
        skips.append(cout)
        for _ in range(blocks):
            cin, cout = cout, ch * m
            n += block(cin, cout, emb, r in attn, False, gated)
            skips.append(cout)
    for level in reversed(range(len(mult))):
        r = res >> level
        if level == len(mult) - 1:
            n += block(cout, cout, emb, True, False, gated)
            n += block(cout, cout, emb, False, False, gated)
        else:
            n += block(cout, cout, emb, False, True, gated)
        for idx in range(blocks + 1):
            cin = cout + skips.pop()
            cout = ch * mult[level]
            n += block(cin, cout, emb, idx == blocks and r in attn, False, gated)
        if level == 0:
            n += gn(cout) + conv(cout, cout_img, 3, gated)
    assert not skips
    return n


if __name__ == "__main__":
    # EDM's CIFAR-10 DDPM++ (cond=False): channel_mult [2,2,2], dropout 0.13; train.py adds augment_dim 9
    # when augmentation is on (the released checkpoints), which is one bias-free Linear(9, 128).
    print("edm-ddpmpp-cifar10 (augment_dim 0):", song_unet(32, 3, 3, mult=(2, 2, 2)))
    print("edm-ddpmpp-cifar10 (augment_dim 9):", song_unet(32, 3, 3, mult=(2, 2, 2), augment_dim=9))
    # Ambient Diffusion CelebA 64: img_channels = 2 * 3 in AND out (the last 3 outputs are discarded), every
    # conv gated; ours keeps 3 output channels.
    print("ambient-celeba64 reference (6 in, 6 out, gated):", song_unet(64, 6, 6, gated=True))
    print("ambient-celeba64 ours      (6 in, 3 out, gated):", song_unet(64, 6, 3, gated=True))
    print("ambient-celeba64 ungated   (6 in, 3 out):", song_unet(64, 6, 3))
