"""Minimal safetensors reader and writer (format: u64 header length, JSON header, raw
little-endian data) over numpy arrays or PyTorch tensors, so the tools need neither the
safetensors package nor, for numpy data, PyTorch."""
import json
import struct

import numpy as np

_NP = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}
_FROM = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "BF16": np.uint16}


def _raw(t):
    """(dtype name, shape, bytes) of a numpy array, a (\"BF16\", uint16 array) pair or a tensor."""
    if isinstance(t, tuple) and t[0] == "BF16":
        a = np.ascontiguousarray(t[1], dtype=np.uint16)
        return "BF16", list(a.shape), a.tobytes()
    if not isinstance(t, np.ndarray):  # a torch tensor
        import torch

        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            return "BF16", list(t.shape), t.view(torch.uint8).numpy().tobytes()
        t = t.numpy()
    a = np.ascontiguousarray(t)
    return _NP[a.dtype], list(a.shape), a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def save(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dt, shape, raw = _raw(tensors[name])
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load(path):
    """(tensors as float32/int numpy arrays (BF16 widened to float32), metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=np.dtype(_FROM[h["dtype"]]).newbyteorder("<"))
        if h["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(h["shape"]).astype(arr.dtype.newbyteorder("="))
    return out, meta
