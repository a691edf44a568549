"""A torch-only peer for conv3d: torch's conv3d (cuDNN, bf16, channels_last_3d on CUDA; f32 on the
CPU) at every convolution shape of the U-Net's forward (tools/unet_reference.py, the shapes taken
by forward hooks from one forward), batch B. tomodiff has no single-conv3d benchmark: its conv3d
time is inside `tomodiff bench unet`, so this gives the rate cuDNN reaches on the same shapes.
One line per shape (times the number of convolutions of that shape in one forward) and a total.

    python3 scripts/peer_conv3d_torch.py --config paper --batch 8 --device cuda
"""
import os
import sys
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F

for d in ("tools", os.path.join("..", "tools")):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), d))
from peer_common import setup  # noqa: E402

a, cfg, dev, cuda, model, x, t = setup()
model.eval()
dtype = torch.bfloat16 if cuda else torch.float32
shapes = OrderedDict()


def hook(mod, inp, _out):
    n, ci, dd, hh, ww = inp[0].shape
    key = (n, ci, dd, hh, ww, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.padding[0])
    shapes[key] = shapes.get(key, 0) + 1


hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
    model(x, t)
for h in hooks:
    h.remove()
del model
if cuda:
    torch.cuda.empty_cache()


def seconds(fn):
    """Mean time of fn() after warm-ups (cuDNN's algorithm search), over at least 0.05 s (GPU,
    CUDA events) or 0.3 s (CPU) and 5 calls."""
    for _ in range(3):
        fn()
    if cuda:
        torch.cuda.synchronize()
    n, total = 0, 0.0
    while total < (0.05 if cuda else 0.3) or n < 5:
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            total += s.elapsed_time(e) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            total += time.perf_counter() - t0
        n += 1
    return total / n


label = "bf16" if cuda else "f32"
total_s, total_flops, convs = 0.0, 0.0, 0
with torch.no_grad():
    for (n, ci, dd, hh, ww, co, k, stride, pad), count in shapes.items():
        xi = torch.randn((n, ci, dd, hh, ww), device=dev, dtype=dtype)
        w = torch.randn((co, ci, k, k, k), device=dev, dtype=dtype) * (1.0 / (ci * k**3)) ** 0.5
        b = torch.zeros(co, device=dev, dtype=dtype)
        if cuda:
            xi = xi.to(memory_format=torch.channels_last_3d)
            w = w.to(memory_format=torch.channels_last_3d)
        s = seconds(lambda: F.conv3d(xi, w, b, stride=stride, padding=pad))
        do, ho, wo = ((v + 2 * pad - k) // stride + 1 for v in (dd, hh, ww))
        flops = 2.0 * n * do * ho * wo * co * ci * k**3
        total_s += s * count
        total_flops += flops * count
        convs += count
        print(f"torch conv3d {label} {dev.type} {n}x{ci}x[{dd}, {hh}, {ww}] -> {co} k{k} s{stride} (x{count}): {s * 1e3:.3f} ms, {flops / s / 1e9:.1f} GFLOP/s")
        del xi, w, b
print(f"torch conv3d total {a.config} batch {a.batch} {label} {dev.type}: {total_s * 1e3:.3f} ms over {convs} convs ({len(shapes)} shapes), "
      f"{total_flops / total_s / 1e9:.1f} GFLOP/s")
