"""Converts a PyTorch checkpoint of a guided-diffusion-style 3D U-Net into the safetensors weights
and config.json that tomodiff loads (docs/NETWORK.md, "Converting a PyTorch checkpoint").

    python3 tools/pt_to_safetensors.py model.pt OUT/weights.safetensors [--weights auto|state_dict|ema]
        [--patch 32,32,32] [--norm-groups 32] [--head-channels 64 | --num-heads N] [--prediction eps|v]
        [--mu-max 0.04] [--context trilinear|area] [--dtype f32|bf16|f16]

- Input: a .pt file (a state_dict, or a dict holding one under 'state_dict', 'model', 'ema' or
  'net'; an EMA as a name -> tensor dict or as an unnamed 'shadow_params' list in parameter
  order) or a .safetensors file. PyTorch is not needed: .pt zip archives are read with a
  restricted unpickler that builds numpy arrays (and refuses any other class).
- The architecture (input, output and model channels, channel multipliers, residual blocks per
  level, attention placement) is inferred from the state_dict's names and shapes and written to
  config.json beside the output. What a state_dict cannot show (norm groups, head size, patch,
  prediction, the intensity range, the context resampling) comes from the options, and is also
  stored in the safetensors metadata, where tomodiff checks it against the config at load.
- `--weights auto` takes the EMA when the checkpoint has one, and says which it wrote.
"""
import argparse
import collections
import json
import os
import pickle
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from safetensors_io import load as load_safetensors  # noqa: E402
from safetensors_io import save  # noqa: E402

# ---- reading .pt without PyTorch ----

_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "BFloat16Storage": "bf16",
             "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
             "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def _rebuild_tensor(storage, offset, size, stride, *_):
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    s = [x * storage.itemsize for x in stride]
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=s).copy()


class _Unpickler(pickle.Unpickler):
    """Builds numpy arrays from torch's pickled tensors; any other class is refused."""

    def __init__(self, f, zf, prefix):
        super().__init__(f)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *_: data
        if module == "torch" and name in _STORAGES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint of tensors (refused)")

    def persistent_load(self, pid):
        kind, storage, key = pid[0], pid[1], pid[2]
        if kind != "storage" or storage not in _STORAGES:
            raise pickle.UnpicklingError(f"unsupported storage {pid[:2]}")
        raw = self.zf.read(f"{self.prefix}/data/{key}")
        dt = _STORAGES[storage]
        if dt == "bf16":
            return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).astype(dt)


def load_pt(path):
    if not zipfile.is_zipfile(path):
        sys.exit(f"{path}: not a zip-format PyTorch checkpoint (saved by torch >= 1.6); re-save it with torch.save")
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            sys.exit(f"{path}: no data.pkl in the archive")
        prefix = pkl[0][: -len("/data.pkl")]
        with zf.open(pkl[0]) as f:
            try:
                return _Unpickler(f, zf, prefix).load()
            except pickle.UnpicklingError as e:
                sys.exit(f"{path}: {e}")


# ---- finding the weights ----

def is_state_dict(o):
    return isinstance(o, dict) and o and all(isinstance(v, np.ndarray) for v in o.values())


def find_weights(obj, which):
    """(name -> array, what was taken) from a loaded checkpoint."""
    if is_state_dict(obj):
        if which == "ema":
            sys.exit("--weights ema: the checkpoint is a plain state_dict and has no 'ema'")
        return {k.removeprefix("module."): v for k, v in obj.items()}, "the state_dict"
    if not isinstance(obj, dict):
        sys.exit("the checkpoint is neither a state_dict nor a dict holding one")
    sd = next((obj[k] for k in ("state_dict", "model", "net") if is_state_dict(obj.get(k))), None)
    sd = None if sd is None else {k.removeprefix("module."): v for k, v in sd.items()}
    ema = obj.get("ema")
    if which in ("auto", "ema") and ema is not None:
        if is_state_dict(ema):
            return {k.removeprefix("module."): v for k, v in ema.items()}, "the EMA (named)"
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else ema if isinstance(ema, list) else None
        if isinstance(shadow, list) and all(isinstance(v, np.ndarray) for v in shadow):
            if sd is None:
                sys.exit("the EMA is an unnamed shadow_params list and the checkpoint has no state_dict to name it from")
            names = [k for k, v in sd.items() if np.issubdtype(v.dtype, np.floating)]
            if len(names) != len(shadow) or any(sd[n].shape != s.shape for n, s in zip(names, shadow)):
                sys.exit(f"the EMA's shadow_params ({len(shadow)} tensors) do not match the state_dict's parameters ({len(names)}) in order and shape")
            return dict(zip(names, shadow)), f"the EMA (shadow_params, {len(shadow)} tensors named in the state_dict's parameter order)"
        if which == "ema":
            sys.exit("--weights ema: the checkpoint's 'ema' is neither a state_dict nor a shadow_params list")
    if which == "ema":
        sys.exit("--weights ema: the checkpoint has no 'ema'")
    if sd is None:
        sys.exit(f"no state_dict under 'state_dict', 'model' or 'net' (keys: {sorted(obj)[:10]})")
    return sd, "the state_dict"


# ---- the architecture from names and shapes ----

def infer_architecture(sd):
    def shape(name):
        if name not in sd:
            sys.exit(f"not a guided-diffusion U-Net state_dict: {name} is missing")
        return sd[name].shape

    mc, cin = shape("input_blocks.0.0.weight")[:2]
    levels, cur, ds, att, i = [], [], 1, set(), 1
    while True:
        p = f"input_blocks.{i}."
        if p + "0.op.weight" in sd:
            levels.append(cur)
            cur, ds = [], ds * 2
        elif p + "0.in_layers.2.weight" in sd:
            cur.append(sd[p + "0.in_layers.2.weight"].shape[0])
            if p + "1.qkv.weight" in sd:
                att.add(ds)
        else:
            break
        i += 1
    levels.append(cur)
    blocks = {len(level) for level in levels}
    if len(blocks) != 1 or not levels[0]:
        sys.exit(f"levels with different numbers of residual blocks: {[len(level) for level in levels]}")
    if any(level[-1] % mc for level in levels):
        sys.exit(f"level channels {[level[-1] for level in levels]} are not multiples of {mc}")
    if "middle_block.1.qkv.weight" not in sd:
        sys.exit("the middle block has no attention (middle_block.1.qkv.weight missing): not this architecture")
    return {"in_channels": int(cin), "model_channels": int(mc), "out_channels": int(shape("out.2.weight")[0]),
            "num_res_blocks": blocks.pop(), "channel_mult": [int(level[-1] // mc) for level in levels], "attention_ds": sorted(att)}


def bf16(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ("BF16", ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input")
    p.add_argument("output", help="OUT/weights.safetensors; config.json is written beside it")
    p.add_argument("--weights", default="auto", choices=["auto", "state_dict", "ema"])
    p.add_argument("--patch", default="32,32,32", help="the training patch (pz,py,px); not in a state_dict")
    p.add_argument("--norm-groups", type=int, default=32)
    p.add_argument("--head-channels", type=int, default=64, help="channels per attention head (guided-diffusion's num_head_channels)")
    p.add_argument("--num-heads", type=int, help="a fixed head count instead (guided-diffusion's num_heads with num_head_channels=-1)")
    p.add_argument("--prediction", default="eps", choices=["eps", "v"])
    p.add_argument("--mu-max", type=float, default=0.04, help="attenuation (1/mm) that maps to the model range's 1")
    p.add_argument("--mu-min", type=float, default=0.0, help="attenuation (1/mm) that maps to -1; z-scored data: mean - std, with --mu-max mean + std")
    p.add_argument("--no-clip", action="store_true", help="the model's data leave [-1, 1] (z-scored): x0 is not clamped while sampling")
    p.add_argument("--context", default="trilinear", choices=["trilinear", "area"])
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    a = p.parse_args(argv)
    if a.input.endswith(".safetensors"):
        try:
            obj = load_safetensors(a.input)[0]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{a.input}: {e}")
    else:
        obj = load_pt(a.input)
    sd, what = find_weights(obj, a.weights)
    sd = {k: v for k, v in sd.items() if np.issubdtype(v.dtype, np.floating)}
    cfg = infer_architecture(sd)
    try:
        patch = [int(x) for x in a.patch.split(",")]
        assert len(patch) == 3 and min(patch) > 0
    except (ValueError, AssertionError):
        sys.exit(f"--patch {a.patch!r}: three positive integers expected, e.g. 32,32,32")
    if a.num_heads is not None and a.num_heads <= 0:
        sys.exit(f"--num-heads {a.num_heads}: a positive head count expected")
    heads = {"num_heads": a.num_heads} if a.num_heads else {"head_channels": a.head_channels}
    cfg.update({**heads, "norm_groups": a.norm_groups, "patch": patch, "context": a.context,
                "mu_max": a.mu_max, "prediction": a.prediction})
    if a.mu_min:
        cfg["mu_min"] = a.mu_min
    if a.no_clip:
        cfg["clip_x0"] = False
    conv = {"f32": lambda v: v.astype(np.float32), "f16": lambda v: v.astype(np.float16), "bf16": bf16}[a.dtype]
    meta = {"tomodiff.norm_groups": a.norm_groups, **{f"tomodiff.{k}": v for k, v in heads.items()}, "tomodiff.qkv_order": "legacy",
            "tomodiff.prediction": a.prediction, "tomodiff.mu_max": a.mu_max, "tomodiff.mu_min": a.mu_min, "tomodiff.source": os.path.basename(a.input),
            "tomodiff.weights": what}
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    save(a.output, {k: conv(v) for k, v in sd.items()}, metadata=meta)
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(a.output)), "config.json")
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote {what}: {len(sd)} tensors to {a.output} ({a.dtype}), and {cfg_path}:")
    print("  inferred: " + ", ".join(f"{k} {cfg[k]}" for k in ("in_channels", "model_channels", "out_channels", "num_res_blocks", "channel_mult", "attention_ds")))
    given = ("norm_groups", *heads, "patch", "prediction", "mu_min", "mu_max", "clip_x0", "context")
    print("  given (a state_dict cannot show them; check them): " + ", ".join(f"{k} {cfg.get(k, {'mu_min': 0.0, 'clip_x0': True}.get(k))}" for k in given))


if __name__ == "__main__":
    main()
