"""The peer for `tomodiff bench unet`: the same U-Net (tools/unet_reference.py) in PyTorch, one
forward over a batch of patches. CPU: f32 with the same thread count (oneDNN); CUDA: bf16 autocast,
cuDNN, channels_last_3d.

    python3 scripts/peer_unet_torch.py --config tiny --batch 4 --device cpu --threads 2
"""
import argparse
import os
import sys
import time

import torch

# tools/ beside this script (a GPU bundle) or in the repository.
for d in ("tools", os.path.join("..", "tools")):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), d))
from unet_reference import PAPER, TINY, UNet  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--config", default="tiny", choices=["tiny", "paper"])
p.add_argument("--batch", type=int, default=4)
p.add_argument("--patch", type=int, default=None)
p.add_argument("--device", default="cpu")
p.add_argument("--threads", type=int, default=None)
a = p.parse_args()
cfg = dict(TINY if a.config == "tiny" else PAPER)
if a.patch:
    cfg["patch"] = (a.patch,) * 3
if a.threads:
    torch.set_num_threads(a.threads)
dev = torch.device(a.device)
model = UNet(cfg).eval().to(dev)
x = torch.randn((a.batch, 5) + tuple(cfg["patch"]), device=dev)
t = torch.randint(0, 1000, (a.batch,), device=dev)
cuda = dev.type == "cuda"
if cuda:
    model = model.to(memory_format=torch.channels_last_3d)
    x = x.to(memory_format=torch.channels_last_3d)
    torch.backends.cudnn.benchmark = True


def run():
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        return model(x, t)


run()
if cuda:
    torch.cuda.synchronize()
times, total = [], 0.0
while total < (1.0 if cuda else 3.0) or len(times) < 2:
    t0 = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
    total += times[-1]
s = sum(times) / len(times)
print(f"torch unet {a.batch}x{tuple(cfg['patch'])} {dev.type} threads={torch.get_num_threads()}: {s * 1e3:.1f} ms, {a.batch / s:.1f} patches/s")
