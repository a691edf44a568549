"""PyTorch reference of the tomodiff U-Net (guided-diffusion's UNetModel layout in 3D, parameter
names as its state_dict) and the fixture writer for the tests.

    python3 tools/unet_reference.py tests/fixtures    # writes unet_tiny_weights/io.safetensors

Weights are seeded random and non-zero everywhere (also where training would start from zero),
so every parameter matters to the output. The io file holds the inputs x (N, 5, D, H, W) and
t (N), the output eps, and intermediate activations "act.<block>" in PyTorch's NCDHW layout; the
grads file the MSE loss against a fixed target and the gradient of every parameter ("grad.<name>").
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from safetensors_io import save  # noqa: E402

TINY = dict(in_channels=5, model_channels=16, out_channels=1, num_res_blocks=1, channel_mult=(1, 2, 2),
            attention_ds=(4,), head_channels=16, norm_groups=8, patch=(16, 16, 16))
PAPER = dict(in_channels=5, model_channels=64, out_channels=1, num_res_blocks=2, channel_mult=(1, 2, 4, 4),
             attention_ds=(4,), head_channels=64, norm_groups=32, patch=(32, 32, 32))


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, ci, co, emb, groups):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, ci), nn.SiLU(), nn.Conv3d(ci, co, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, co))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, co), nn.SiLU(), nn.Dropout(0.0), nn.Conv3d(co, co, 3, padding=1))
        self.skip_connection = nn.Identity() if ci == co else nn.Conv3d(ci, co, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, c, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)

    def forward(self, x):
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        n = qkv.shape[-1]
        ch = c // self.heads
        # "Legacy" order: each head's q, k and v are consecutive blocks of its 3*ch channels.
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, n).split(ch, dim=1)
        s = 1.0 / math.sqrt(math.sqrt(ch))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, n)
        return (flat + self.proj_out(a)).reshape(x.shape)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv3d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv3d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        mc, g = cfg["model_channels"], cfg["norm_groups"]
        e = 4 * mc
        heads = lambda c: cfg.get("num_heads") or max(c // cfg["head_channels"], 1)  # noqa: E731
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, e), nn.SiLU(), nn.Linear(e, e))
        self.input_blocks = nn.ModuleList([Seq([nn.Conv3d(cfg["in_channels"], mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(cfg["channel_mult"]):
            for _ in range(cfg["num_res_blocks"]):
                layers = [ResBlock(ch, m * mc, e, g)]
                ch = m * mc
                if ds in cfg["attention_ds"]:
                    layers.append(AttentionBlock(ch, heads(ch), g))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(cfg["channel_mult"]) - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq([ResBlock(ch, ch, e, g), AttentionBlock(ch, heads(ch), g), ResBlock(ch, ch, e, g)])
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(cfg["channel_mult"]))[::-1]:
            for i in range(cfg["num_res_blocks"] + 1):
                layers = [ResBlock(ch + chans.pop(), m * mc, e, g)]
                ch = m * mc
                if ds in cfg["attention_ds"]:
                    layers.append(AttentionBlock(ch, heads(ch), g))
                if level and i == cfg["num_res_blocks"]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(nn.GroupNorm(g, ch), nn.SiLU(), nn.Conv3d(ch, cfg["out_channels"], 3, padding=1))

    def forward(self, x, t, acts=None):
        emb = self.time_embed(timestep_embedding(t, self.mc))
        if acts is not None:
            acts["act.emb"] = emb
        hs, h = [], x
        for i, b in enumerate(self.input_blocks):
            h = b(h, emb)
            hs.append(h)
            if acts is not None:
                acts[f"act.input_blocks.{i}"] = h
        h = self.middle_block(h, emb)
        if acts is not None:
            acts["act.middle_block"] = h
        for i, b in enumerate(self.output_blocks):
            h = b(torch.cat([h, hs.pop()], dim=1), emb)
            if acts is not None:
                acts[f"act.output_blocks.{i}"] = h
        return self.out(h)


def randomize(model, seed):
    """Seeded weights, non-zero everywhere: U(+-1/sqrt(fan_in)) for weights, U(+-0.1) for biases,
    1 + U(+-0.2) for norm scales."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen) * 2 - 1
            if ".norm." in f".{name}" or any(f"{s}.weight" in name for s in ("in_layers.0", "out_layers.0", "out.0")):
                p.copy_(1 + 0.2 * u if name.endswith("weight") else 0.1 * u)
            elif name.endswith("bias"):
                p.copy_(0.1 * u)
            else:
                p.copy_(u / math.sqrt(p[0].numel()))


def main(out_dir):
    torch.manual_seed(0)
    model = UNet(TINY).eval()
    randomize(model, 1234)
    n = sum(p.numel() for p in model.parameters())
    assert n == 734065, n
    assert sum(p.numel() for p in UNet(PAPER).parameters()) == 68590209
    gen = torch.Generator().manual_seed(99)
    x = torch.randn((2, 5) + TINY["patch"], generator=gen)
    t = torch.tensor([10, 700], dtype=torch.int64)
    acts = {}
    with torch.no_grad():
        eps = model(x, t, acts)
    keep = {k: v for k, v in acts.items() if k in ("act.emb", "act.input_blocks.0", "act.input_blocks.2", "act.middle_block", "act.output_blocks.1")}
    # The global context's resampling, on a volume whose shape does not divide the patch's.
    vol = torch.randn((1, 1, 13, 11, 9), generator=gen)
    keep["resample.volume"] = vol
    keep["resample.trilinear"] = F.interpolate(vol, size=(4, 5, 6), mode="trilinear", align_corners=False)
    keep["resample.area"] = F.interpolate(vol, size=(4, 5, 6), mode="area")
    keep["resample.trilinear_up"] = F.interpolate(vol, size=(20, 16, 12), mode="trilinear", align_corners=False)
    # Gradients of the training loss (MSE against a fixed target) for every parameter.
    target = torch.randn(eps.shape, generator=gen)
    model.zero_grad()
    loss = ((model(x, t) - target) ** 2).mean()
    loss.backward()
    grads = {f"grad.{k}": p.grad for k, p in model.named_parameters()}
    os.makedirs(out_dir, exist_ok=True)
    save(os.path.join(out_dir, "unet_tiny_grads.safetensors"), {"target": target, "loss": loss.detach().reshape(1), **grads})
    save(os.path.join(out_dir, "unet_tiny_weights.safetensors"), dict(model.state_dict()))
    save(os.path.join(out_dir, "unet_tiny_io.safetensors"), {"x": x, "t": t.float(), "eps": eps, **keep},
         metadata={"torch": torch.__version__, "seed": 1234})
    print(f"tiny U-Net: {n} parameters; eps std {eps.std():.4f}; fixtures in {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
