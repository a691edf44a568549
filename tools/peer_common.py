"""What the PyTorch peers of `tomodiff bench unet` and `bench train` share: arguments, the model
of tools/unet_reference.py with random inputs on the device, and the timing loop."""
import argparse
import time

import torch

from unet_reference import PAPER, TINY, UNet


def setup():
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
    t = torch.randint(0, 1000, (a.batch,), device=dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True
    return a, cfg, dev, cuda, model, x, t


def mean_seconds(fn, cuda):
    """Mean time of fn() after one warm-up call, over at least 1 s (GPU) or 3 s (CPU)."""
    fn()
    if cuda:
        torch.cuda.synchronize()
    times, total = [], 0.0
    while total < (1.0 if cuda else 3.0) or len(times) < 2:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        total += times[-1]
    return sum(times) / len(times)
