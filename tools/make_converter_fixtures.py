"""Writes the converter's test fixtures (python/tests/test_converter.py) with the PyTorch
reference: small U-Nets (8 channels, 4 levels) as a guided-diffusion-style user would save them.

    python3 tools/make_converter_fixtures.py tests/fixtures/converter

- ds4.pt: a plain state_dict, attention at downsampling factor 4;
- ds8_ema.pt: {"model": state_dict, "ema": {"shadow_params": [...]}}, attention at factor 8,
  the EMA list (other weights than the state_dict's) in parameter order;
- heads4.pt: a plain state_dict with num_heads = 4 for every attention block (no head size);
- ds4_io.safetensors, ds8_io.safetensors, heads4_io.safetensors: inputs x (N, 5, D, H, W), t (N)
  and the output eps of the weights the converter should pick (the state_dict; the EMA list).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from safetensors_io import save  # noqa: E402
from unet_reference import UNet, randomize  # noqa: E402

BASE = dict(in_channels=5, model_channels=8, out_channels=1, num_res_blocks=1, channel_mult=(1, 1, 2, 2),
            head_channels=8, norm_groups=4, patch=(16, 16, 16))


def io(model, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 5, 16, 16, 16), generator=gen)
    t = torch.tensor([3, 600], dtype=torch.int64)
    with torch.no_grad():
        return {"x": x, "t": t.float(), "eps": model(x, t)}


def main(out):
    os.makedirs(out, exist_ok=True)
    m4 = UNet(dict(BASE, attention_ds=(4,))).eval()
    randomize(m4, 41)
    torch.save(m4.state_dict(), os.path.join(out, "ds4.pt"))
    save(os.path.join(out, "ds4_io.safetensors"), io(m4, 1))
    m8 = UNet(dict(BASE, attention_ds=(8,))).eval()
    randomize(m8, 81)
    ema = UNet(dict(BASE, attention_ds=(8,))).eval()
    randomize(ema, 82)
    shadow = [p.detach().clone() for p in ema.parameters()]
    torch.save({"model": m8.state_dict(), "ema": {"shadow_params": shadow, "decay": 0.999}}, os.path.join(out, "ds8_ema.pt"))
    save(os.path.join(out, "ds8_io.safetensors"), io(ema, 2))
    mh = UNet(dict(BASE, attention_ds=(4,), num_heads=4)).eval()
    randomize(mh, 43)
    torch.save(mh.state_dict(), os.path.join(out, "heads4.pt"))
    save(os.path.join(out, "heads4_io.safetensors"), io(mh, 3))
    print(f"fixtures in {out}: {sum(p.numel() for p in m4.parameters())} and {len(shadow)} parameters tensors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/converter")
