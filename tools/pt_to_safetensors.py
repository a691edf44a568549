"""Converts a PyTorch checkpoint (a state_dict, or a dict holding one under 'state_dict',
'model' or 'ema') of the tomodiff U-Net into safetensors that `tomodiff model run` loads.

    python3 tools/pt_to_safetensors.py model.pt model.safetensors [--dtype f32|bf16|f16]
"""
import argparse
import sys

import torch

from safetensors_io import save

p = argparse.ArgumentParser()
p.add_argument("input")
p.add_argument("output")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
a = p.parse_args()
obj = torch.load(a.input, map_location="cpu", weights_only=True)
for key in ("ema", "state_dict", "model"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
        break
if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
    sys.exit(f"{a.input}: not a state_dict of tensors")
dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
# DataParallel prefixes every name with "module."
tensors = {k.removeprefix("module."): v.to(dtype) for k, v in obj.items() if v.is_floating_point()}
save(a.output, tensors)
print(f"{len(tensors)} tensors written to {a.output}")
