"""The peer for `tomodiff bench unet`: the same U-Net (tools/unet_reference.py) in PyTorch, one
forward over a batch of patches. CPU: f32 with the same thread count (oneDNN); CUDA: bf16 autocast,
cuDNN, channels_last_3d.

    python3 scripts/peer_unet_torch.py --config tiny --batch 4 --device cpu --threads 2
"""
import os
import sys

import torch

# tools/ beside this script (a GPU bundle) or in the repository.
for d in ("tools", os.path.join("..", "tools")):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), d))
from peer_common import peer_json, setup, timings, torch_name  # noqa: E402

a, cfg, dev, cuda, model, x, t = setup()
model.eval()


def run():
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        return model(x, t)


times = timings(run, cuda)
s = sorted(times)[len(times) // 2]
print(f"torch unet {a.batch}x{tuple(cfg['patch'])} {dev.type} threads={torch.get_num_threads()}: {s * 1e3:.1f} ms, {a.batch / s:.1f} patches/s")
print(peer_json(times, peer=torch_name(dev)))
