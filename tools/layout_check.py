#!/usr/bin/env python3
"""Does a prior's unconditional sample have the layout of its training volumes? Compares each
sample with the voxel-wise mean of a set of training phantoms (all in attenuation, mapped to the
model range x = 2 mu / mu_max - 1 and clamped): Pearson correlation, MSE, and the fraction of air
(x < -0.9). A held-out phantom scores what a perfect sample would. With --tissues, also the
share of voxels in each tissue's HU band (air, lung, fat, soft tissue, bone; HU from
mu = MU_WATER (1 + HU / 1000), as src/ct/units.rs), for the samples and the phantoms' mean share:
a sample without bone has no ribs or spine. Standard library only.

Usage: layout_check.py --phantoms c1.npy c2.npy ... --samples s.npy ... [--mu-max 0.04] [--tissues]
Make the phantoms with `tomodiff phantom chest --shape 64,64,64 --seed N -o cN.npy`."""
import argparse
import array
import ast
import math


def load(path, mu_max):
    raw = open(path, "rb").read()
    if raw[:6] != b"\x93NUMPY":
        raise SystemExit(f"{path}: not a .npy file")
    n = int.from_bytes(raw[8:10], "little")
    header = ast.literal_eval(raw[10 : 10 + n].decode())
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise SystemExit(f"{path}: little-endian f32 in C order expected, got {header}")
    a = array.array("f")
    a.frombytes(raw[10 + n :])
    return header["shape"], [min(1.0, max(-1.0, 2.0 * v / mu_max - 1.0)) for v in a]


MU_WATER = 0.0193  # 1/mm, src/ct/chest.rs
BANDS = [("air", -2000, -900), ("lung", -900, -500), ("fat", -150, -30), ("soft tissue", 0, 150), ("bone", 250, 4000)]


def tissues(x, mu_max):
    """Shares of the voxels of `x` (model range) in each HU band."""
    hu = [1000.0 * ((v + 1.0) * mu_max / 2.0 / MU_WATER - 1.0) for v in x]
    return [sum(1 for h in hu if lo <= h < hi) / len(hu) for _, lo, hi in BANDS]


def corr(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    sab = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return sab / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phantoms", nargs="+", required=True)
    ap.add_argument("--samples", nargs="+", required=True)
    ap.add_argument("--mu-max", type=float, default=0.04)
    ap.add_argument("--tissues", action="store_true", help="the share of voxels in each tissue's HU band")
    a = ap.parse_args()
    vols = [load(p, a.mu_max) for p in a.phantoms]
    shape = vols[0][0]
    if any(s != shape for s, _ in vols):
        raise SystemExit("the phantoms differ in shape")
    n = len(vols[0][1])
    mean = [sum(v[1][i] for v in vols) / len(vols) for i in range(n)]
    spread = sum((v[1][i] - mean[i]) ** 2 for v in vols for i in range(n)) / (n * len(vols))
    print(f"{len(vols)} phantoms {shape}: per-voxel variance about their mean {spread:.4f}")
    print("| volume | correlation with the mean phantom | MSE to it | air fraction |")
    print("| --- | --- | --- | --- |")
    for p in a.samples:
        s, x = load(p, a.mu_max)
        if s != shape:
            raise SystemExit(f"{p}: shape {s}, the phantoms are {shape}")
        mse = sum((u - v) ** 2 for u, v in zip(x, mean)) / n
        air = sum(1 for u in x if u < -0.9) / n
        print(f"| {p} | {corr(x, mean):.3f} | {mse:.3f} | {air:.3f} |")
    if a.tissues:
        print()
        print("| volume | " + " | ".join(f"{name} ({lo}..{hi} HU)" for name, lo, hi in BANDS) + " |")
        print("|" + " --- |" * (len(BANDS) + 1))
        shares = [tissues(v[1], a.mu_max) for v in vols]
        mean_shares = [sum(s[k] for s in shares) / len(shares) for k in range(len(BANDS))]
        print("| the phantoms (mean) | " + " | ".join(f"{f:.3f}" for f in mean_shares) + " |")
        for p in a.samples:
            print(f"| {p} | " + " | ".join(f"{f:.3f}" for f in tissues(load(p, a.mu_max)[1], a.mu_max)) + " |")


if __name__ == "__main__":
    main()
