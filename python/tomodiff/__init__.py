"""tomodiff: CT reconstruction with a 3D patch diffusion prior, over numpy arrays.

Conventions (docs/API.md): volumes are (nz, ny, nx) and projections (views, rows, cols), float32,
row-major; lengths in mm, angles in degrees, attenuation in 1/mm, projections are line integrals.
Arrays of other real dtypes or layouts are converted (a copy); complex, object, non-finite or
out-of-float32-range arrays are refused with ShapeError. Devices: "cpu", "emu", "cuda", "cuda:N" or "auto" (a GPU
when there is one). Long calls release the GIL, take ``progress(done, total)`` (return False to
cancel) and honour Ctrl-C.

    import tomodiff as td
    g = td.Geometry.cone((64, 64, 64), det_shape=(104, 128), n_views=8,
                         source_origin=192, origin_detector=96, det_spacing=(1.5, 1.5))
    truth = td.phantom("chest", g, seed=7)
    proj = td.add_poisson_noise(td.Projector(g).forward(truth), g, i0=1e5)
    rec = td.reconstruct(proj, g, steps=50, progress=lambda k, n: print(k, n))
    print(td.metrics(rec, truth)["psnr"])
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

import numpy as np

from . import _tomodiff as _td
from ._tomodiff import (
    ArgumentError,
    CancelledError,
    DeviceError,
    GeometryError,
    MemoryBudgetError,
    Model,
    ModelError,
    ShapeError,
    TomodiffError,
)

__all__ = [
    "Geometry", "Projector", "fbp", "cgls", "sirt", "phantom", "add_poisson_noise", "load_model",
    "reconstruct", "sample", "metrics", "devices", "Model", "TomodiffError", "GeometryError",
    "ShapeError", "ArgumentError", "MemoryBudgetError", "CancelledError", "ModelError", "DeviceError",
]

Progress = Optional[Callable[[int, int], Optional[bool]]]


def _f32(a, shape, what: str) -> np.ndarray:
    """`a` as a C-contiguous float32 array of `shape` (a copy only when needed)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise ShapeError(f"{what}: dtype {arr.dtype} is not real numbers (float32 expected)")
    if tuple(arr.shape) != tuple(shape):
        raise ShapeError(f"{what}: shape {tuple(arr.shape)}, the geometry needs {tuple(shape)}")
    if arr.dtype == np.float64:
        big = np.abs(arr[np.isfinite(arr)]).max(initial=0.0)
        if big > np.finfo(np.float32).max:
            raise ShapeError(f"{what}: {big:g} is out of float32 range")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        i = int(np.flatnonzero(~np.isfinite(out.ravel()))[0])
        raise ShapeError(f"{what}: non-finite value {out.ravel()[i]} at flat index {i}")
    return out


class Geometry:
    """A scan geometry: the JSON document of docs/CT.md, validated by the engine.

    Build one with ``Geometry.parallel``, ``fan``, ``cone``, ``astra_vectors``, or from a dict, a
    JSON string or a file. ``volume_shape`` is (nz, ny, nx) and ``proj_shape`` (views, rows, cols).
    """

    def __init__(self, doc: dict):
        self._json = json.dumps(doc)
        self.doc = json.loads(self._json)
        vs, ps = _td.geometry_shapes(self._json)
        self.volume_shape = tuple(vs)
        self.proj_shape = tuple(ps)

    @classmethod
    def from_dict(cls, doc: dict) -> "Geometry":
        return cls(doc)

    @classmethod
    def from_json(cls, text: str) -> "Geometry":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise GeometryError(f"geometry: {e}") from None
        return cls(doc)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Geometry":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    @staticmethod
    def _volume(shape, voxel_size, origin) -> dict:
        return {"shape": [int(s) for s in shape], "voxel_size": [float(v) for v in voxel_size], "origin": [float(o) for o in origin]}

    @classmethod
    def _circular(cls, kind, shape, det_shape, n_views, angles_deg, arc_deg, start_deg, voxel_size, origin, det_spacing, det_offset, **distances) -> "Geometry":
        scan = {"type": kind, "det_shape": [int(d) for d in det_shape], "det_spacing": [float(s) for s in det_spacing], "det_offset": [float(o) for o in det_offset]}
        if angles_deg is not None:
            scan["angles_deg"] = [float(a) for a in angles_deg]
        else:
            scan["n_views"] = int(n_views)
            if arc_deg is not None:
                scan["arc_deg"] = float(arc_deg)
            scan["start_deg"] = float(start_deg)
        scan.update({k: float(v) for k, v in distances.items()})
        return cls({"volume": cls._volume(shape, voxel_size, origin), "scan": scan})

    @classmethod
    def parallel(cls, shape, det_shape, n_views=None, *, angles_deg=None, arc_deg=None, start_deg=0.0, voxel_size=(1, 1, 1), origin=(0, 0, 0), det_spacing=(1, 1), det_offset=(0, 0)) -> "Geometry":
        """Circular parallel beam: `n_views` over `arc_deg` (180) or the listed `angles_deg`."""
        return cls._circular("parallel", shape, det_shape, n_views, angles_deg, arc_deg, start_deg, voxel_size, origin, det_spacing, det_offset)

    @classmethod
    def fan(cls, shape, det_shape, n_views=None, *, source_origin, origin_detector, angles_deg=None, arc_deg=None, start_deg=0.0, voxel_size=(1, 1, 1), origin=(0, 0, 0), det_spacing=(1, 1), det_offset=(0, 0)) -> "Geometry":
        """Circular fan beam (each detector row its own fan), distances in mm; arc 360 by default."""
        return cls._circular("fan", shape, det_shape, n_views, angles_deg, arc_deg, start_deg, voxel_size, origin, det_spacing, det_offset, source_origin=source_origin, origin_detector=origin_detector)

    @classmethod
    def cone(cls, shape, det_shape, n_views=None, *, source_origin, origin_detector, angles_deg=None, arc_deg=None, start_deg=0.0, voxel_size=(1, 1, 1), origin=(0, 0, 0), det_spacing=(1, 1), det_offset=(0, 0)) -> "Geometry":
        """Circular cone beam with a flat detector, distances in mm; arc 360 by default."""
        return cls._circular("cone", shape, det_shape, n_views, angles_deg, arc_deg, start_deg, voxel_size, origin, det_spacing, det_offset, source_origin=source_origin, origin_detector=origin_detector)

    @classmethod
    def astra_vectors(cls, kind: str, shape, det_shape, vectors, *, voxel_size=(1, 1, 1), origin=(0, 0, 0)) -> "Geometry":
        """ASTRA's 'parallel3d_vec' or 'cone_vec' rows of 12 numbers (ray or source, detector
        centre, u, v; world x, y, z in mm) as a vector geometry (docs/API.md)."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 12:
            raise GeometryError(f"ASTRA vectors: shape {v.shape}, (views, 12) expected")
        first = {"parallel3d_vec": "ray", "cone_vec": "source"}.get(kind)
        if first is None:
            raise ArgumentError(f"ASTRA geometry {kind!r}: expected parallel3d_vec or cone_vec")
        views = [{first: list(r[0:3]), "det": list(r[3:6]), "u": list(r[6:9]), "v": list(r[9:12])} for r in v.tolist()]
        scan = {"type": "parallel_vec" if first == "ray" else "cone_vec", "det_shape": [int(d) for d in det_shape], "views": views}
        return cls({"volume": cls._volume(shape, voxel_size, origin), "scan": scan})

    def to_dict(self) -> dict:
        return json.loads(self._json)

    def to_json(self) -> str:
        return self._json

    def warnings(self) -> list[str]:
        """What FBP/FDK would warn about this scan (unmeasured lines, radians as degrees, ...)."""
        return list(_td.scan_warnings(self._json))

    def __repr__(self) -> str:
        return f"Geometry({self.doc['scan'].get('type')}, volume {self.volume_shape}, projections {self.proj_shape})"


class Projector:
    """The Siddon projector pair of a geometry on a device: ``forward`` (A) and its exact
    adjoint ``adjoint`` (A^T)."""

    def __init__(self, geometry: Geometry, device: str = "cpu"):
        self.geometry = geometry
        self.device = device

    def forward(self, volume) -> np.ndarray:
        """Line integrals (views, rows, cols) of `volume` (nz, ny, nx) in 1/mm."""
        g = self.geometry
        out = np.empty(g.proj_shape, np.float32)
        _td.project(g.to_json(), _f32(volume, g.volume_shape, "volume"), out, self.device)
        return out

    def adjoint(self, proj) -> np.ndarray:
        """The backprojection A^T of `proj` (views, rows, cols)."""
        g = self.geometry
        out = np.empty(g.volume_shape, np.float32)
        _td.backproject(g.to_json(), _f32(proj, g.proj_shape, "projections"), out, self.device)
        return out


def fbp(proj, geometry: Geometry, window: str = "hann") -> np.ndarray:
    """FBP (parallel, fan) or FDK (cone) of a circular scan, with redundancy weights for short
    and offset scans. `window`: ram-lak, shepp-logan, cosine, hamming or hann."""
    out = np.empty(geometry.volume_shape, np.float32)
    _td.fbp_into(geometry.to_json(), _f32(proj, geometry.proj_shape, "projections"), window, out)
    return out


def _iterate(method, proj, geometry, iters, x0, lam, nonneg, device):
    x = np.zeros(geometry.volume_shape, np.float32) if x0 is None else _f32(x0, geometry.volume_shape, "x0").copy()
    _td.iterate(geometry.to_json(), method, _f32(proj, geometry.proj_shape, "projections"), x, int(iters), float(lam), bool(nonneg), device)
    return x


def cgls(proj, geometry: Geometry, iters: int = 20, x0=None, device: str = "cpu") -> np.ndarray:
    """`iters` CGLS iterations on min ||A x - proj||^2 from `x0` (zeros)."""
    return _iterate("cgls", proj, geometry, iters, x0, 1.0, False, device)


def sirt(proj, geometry: Geometry, iters: int = 100, x0=None, relaxation: float = 1.0, nonneg: bool = True, device: str = "cpu") -> np.ndarray:
    """`iters` SIRT iterations (x >= 0 with `nonneg`)."""
    return _iterate("sirt", proj, geometry, iters, x0, relaxation, nonneg, device)


def phantom(name: str, geometry: Geometry, seed: int = 0) -> np.ndarray:
    """A phantom in 1/mm on the geometry's grid: shepp-logan, ellipsoids or chest."""
    out = np.empty(geometry.volume_shape, np.float32)
    _td.phantom_into(name, geometry.to_json(), int(seed), out)
    return out


def add_poisson_noise(proj, geometry: Geometry, i0: float = 1e5, seed: int = 0) -> np.ndarray:
    """Line integrals with Poisson noise at `i0` incident photons per ray (a new array)."""
    y = _f32(proj, geometry.proj_shape, "projections").copy()
    _td.poisson(y, geometry.proj_shape[2], float(i0), int(seed))
    return y


def load_model(path: Optional[str | os.PathLike] = None, config: Optional[str] = None) -> Model:
    """A diffusion prior: safetensors weights with `config` (a preset or a JSON file; default the
    config.json beside them), or the shipped prior when `path` is None."""
    return _td.load_model(None if path is None else os.fspath(path), config)


_shipped: Optional[Model] = None


def _model(model) -> Model:
    global _shipped
    if model is None:
        if _shipped is None:
            _shipped = load_model()
        return _shipped
    return model if isinstance(model, Model) else load_model(model)


def reconstruct(proj, geometry: Geometry, model=None, *, steps: int = 50, rounds: int = 2, cg_iters: int = 5, eta: float = 0.85, gamma: float = 0.0, start: str = "noise", batch: int = 16, seed: int = 0, device: str = "auto", memory_budget: Optional[int] = None, progress: Progress = None, return_info: bool = False):
    """Reconstructs attenuation (nz, ny, nx) in 1/mm from line integrals with the prior `model`
    (a Model, a weights path, or None for the shipped prior): DDIM `steps` x `rounds` network
    passes with `cg_iters` CG iterations of data consistency each (docs/RECONSTRUCTION.md).
    `progress(done, total)` after each pass (False cancels: CancelledError). The memory is checked
    before any work (MemoryBudgetError; `memory_budget` in bytes). With `return_info`, also a dict
    of timings and the data-range warning."""
    m = _model(model)
    y = _f32(proj, geometry.proj_shape, "projections")
    out = np.empty(geometry.volume_shape, np.float32)
    opts = {"steps": int(steps), "rounds": int(rounds), "cg_iters": int(cg_iters), "eta": float(eta), "gamma": float(gamma), "start": str(start), "batch": int(batch), "seed": int(seed)}
    if memory_budget is not None:
        opts["memory_budget"] = int(memory_budget)
    info = _td.reconstruct_into(m, geometry.to_json(), y, out, opts, device, progress)
    if info.get("warning"):
        import warnings

        warnings.warn(info["warning"], stacklevel=2)
    return (out, info) if return_info else out


def sample(shape: Sequence[int], model=None, *, steps: int = 50, rounds: int = 1, eta: float = 0.85, batch: int = 16, seed: int = 0, device: str = "auto", progress: Progress = None) -> np.ndarray:
    """An unconditional sample of the prior, (nz, ny, nx) in 1/mm."""
    m = _model(model)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ShapeError(f"sample: a (nz, ny, nx) shape is needed, got {shape}")
    out = np.empty(shape, np.float32)
    _td.sample_into(m, list(shape), out, {"steps": int(steps), "rounds": int(rounds), "eta": float(eta), "batch": int(batch), "seed": int(seed)}, device, progress)
    return out


def metrics(x, reference) -> dict:
    """PSNR (dB; whole volume and per plane, against the reference's range) and SSIM per plane
    (axial, coronal, sagittal) of `x` against `reference`, both (nz, ny, nx)."""
    r = np.asarray(reference)
    if r.ndim != 3:
        raise ShapeError(f"metrics: a (nz, ny, nx) reference is needed, got shape {r.shape}")
    return dict(_td.metrics(list(r.shape), _f32(x, r.shape, "x"), _f32(r, r.shape, "reference")))


def devices() -> list[str]:
    """The devices this build can use."""
    return list(_td.devices())
