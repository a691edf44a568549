"""The peer for `tomodiff bench train`: one training step (forward, MSE, backward) of the same
U-Net (tools/unet_reference.py) in PyTorch. CUDA: bf16 autocast, cuDNN, channels_last_3d;
CPU: f32 with the given thread count.

    python3 scripts/peer_train_torch.py --config paper --batch 8 --device cuda
"""
import os
import sys

import torch

for d in ("tools", os.path.join("..", "tools")):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), d))
from peer_common import peer_json, setup, timings, torch_name  # noqa: E402

a, cfg, dev, cuda, model, x, t = setup()
target = torch.randn((a.batch, 1) + tuple(cfg["patch"]), device=dev)


def step():
    model.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        loss = ((model(x, t).float() - target) ** 2).mean()
    loss.backward()


times = timings(step, cuda)
s = sorted(times)[len(times) // 2]
print(f"torch train {a.batch}x{tuple(cfg['patch'])} {dev.type}: {s * 1e3:.1f} ms, {a.batch / s:.2f} patches/s")
print(peer_json(times, peer=torch_name(dev)))
