"""What the PyTorch peers of `tomodiff bench unet` and `bench train` share: arguments, the model
of tools/unet_reference.py with random inputs on the device, and the timing loop."""
import argparse
import json
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


def timings(fn, cuda):
    """Times of fn() after one warm-up call: at least 5 runs and 1 s (GPU) or 3 s (CPU)."""
    fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    while sum(times) < (1.0 if cuda else 3.0) or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def peer_json(times, **extra):
    """The line `tomodiff bench --peer` reads: median, min and max of the runs, and what ran."""
    s = sorted(times)
    n = len(s)
    median = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return "PEER_JSON " + json.dumps({"median_s": median, "min_s": s[0], "max_s": s[-1], "runs": n, **extra})


def torch_name(dev):
    """What ran: the PyTorch version, device and threads (CPU) or GPU name."""
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return f"torch {torch.__version__} ({where})"
