"""The peer for `tomodiff bench train`: one training step (forward, MSE, backward) of the same
U-Net (tools/unet_reference.py) in PyTorch. CUDA: bf16 autocast, cuDNN, channels_last_3d;
CPU: f32 with the given thread count.

    python3 scripts/peer_train_torch.py --config paper --batch 8 --device cuda
"""
import argparse
import os
import sys
import time

import torch

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
cuda = dev.type == "cuda"
model = UNet(cfg).to(dev)
x = torch.randn((a.batch, 5) + tuple(cfg["patch"]), device=dev)
target = torch.randn((a.batch, 1) + tuple(cfg["patch"]), device=dev)
t = torch.randint(0, 1000, (a.batch,), device=dev)
if cuda:
    model = model.to(memory_format=torch.channels_last_3d)
    x = x.to(memory_format=torch.channels_last_3d)
    torch.backends.cudnn.benchmark = True


def step():
    model.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        loss = ((model(x, t).float() - target) ** 2).mean()
    loss.backward()


step()
if cuda:
    torch.cuda.synchronize()
times, total = [], 0.0
while total < (1.0 if cuda else 3.0) or len(times) < 2:
    t0 = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
    total += times[-1]
s = sum(times) / len(times)
print(f"torch train {a.batch}x{tuple(cfg['patch'])} {dev.type}: {s * 1e3:.1f} ms, {a.batch / s:.2f} patches/s")
