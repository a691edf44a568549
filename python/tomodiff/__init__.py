"""tomodiff: CT reconstruction with a 3D patch diffusion prior, over numpy arrays.

Conventions (docs/API.md): volumes are (nz, ny, nx) and projections (views, rows, cols), float32,
row-major; lengths in mm, angles in degrees, attenuation in 1/mm, projections are line integrals.
Arrays of other real dtypes or layouts are converted (a copy); complex, object, non-finite or
out-of-float32-range arrays are refused with ShapeError; counts, seeds and other arguments out of
range or of the wrong type with ArgumentError. Devices: "cpu", "emu", "cuda", "cuda:N" or "auto"
(a GPU when there is one); the projector functions (Projector, cgls, sirt) default to "cpu", the
prior's (reconstruct, sample) to "auto". Long calls release the GIL, take ``progress(done, total)``
(returning False, or any false value except None, cancels) and honour Ctrl-C.

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
import numbers
import operator
import os
import warnings
from typing import Any, Callable, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

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

# Tracebacks name the package's exceptions and Model as tomodiff.X (not _tomodiff.X).
for _cls in (TomodiffError, GeometryError, ShapeError, ArgumentError, MemoryBudgetError, CancelledError, ModelError, DeviceError):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "Geometry", "Projector", "fbp", "cgls", "sirt", "phantom", "add_poisson_noise", "load_model",
    "reconstruct", "sample", "metrics", "devices", "Model", "TomodiffError", "GeometryError",
    "ShapeError", "ArgumentError", "MemoryBudgetError", "CancelledError", "ModelError", "DeviceError",
]

try:
    from importlib.metadata import PackageNotFoundError as _NoMetadata, version as _dist_version

    __version__: str = _dist_version("tomodiff")
except _NoMetadata:  # not installed (the extension built in place): the Cargo version
    __version__ = _td.__version__

#: ``progress(done, total)``: returning False (or any false value except None) cancels.
Progress = Optional[Callable[[int, int], Any]]
#: A prior: a Model, a path to safetensors weights (with the config.json beside them), or None
#: for the shipped prior.
ModelLike = Union[Model, str, "os.PathLike[str]", None]

_U64_MAX = 2**64 - 1


def _count(value, name: str, minimum: int = 1, maximum: int = _U64_MAX) -> int:
    """`value` as an int in [minimum, maximum] (bools and floats refused), else ArgumentError
    naming the argument: "steps must be a positive integer, got -1"."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise ArgumentError(f"{name} must be {what}, got {value!r}") from None
    if v < minimum:
        raise ArgumentError(f"{name} must be {what}, got {v}")
    if v > maximum:
        raise ArgumentError(f"{name} must be {what} up to {maximum}, got {v}")
    return v


def _real(value, name: str) -> float:
    """`value` as a float (a real number, not a bool), else ArgumentError naming the argument;
    the ranges are the engine's to check."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _flag(value, name: str) -> bool:
    """`value` if a bool (or numpy bool), else ArgumentError naming the argument."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _text(value, name: str) -> str:
    """`value` if a str, else ArgumentError naming the argument."""
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a string, got {value!r}")
    return value


def _path(value, name: str) -> str:
    """A str, bytes or os.PathLike as a str, else ArgumentError naming the argument."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise ArgumentError(f"{name} must be a path (str or os.PathLike), got {value!r}")
    return os.fsdecode(value)


def _callback(progress) -> Progress:
    if progress is not None and not callable(progress):
        raise ArgumentError(f"progress must be a callable progress(done, total) or None, got {progress!r}")
    return progress


def _json_default(o):
    """numpy scalars and arrays in a geometry document, as JSON numbers and lists."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} value {o!r} is not JSON (numbers, strings, lists, dicts)")


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
        if not isinstance(doc, dict):
            raise GeometryError(f"geometry: a dict (the JSON document) is needed, got {type(doc).__name__}")
        try:
            self._json = json.dumps(doc, default=_json_default)
        except (TypeError, ValueError) as e:
            raise GeometryError(f"geometry: {e}") from None
        self.doc = json.loads(self._json)
        vs, ps = _td.geometry_shapes(self._json)
        self.volume_shape = tuple(vs)
        self.proj_shape = tuple(ps)

    @classmethod
    def from_dict(cls, doc: dict) -> "Geometry":
        """The geometry of a JSON-like dict (docs/CT.md); numpy scalars and arrays are taken."""
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
            if n_views is not None and _count(n_views, "n_views") != len(scan["angles_deg"]):
                raise ArgumentError(f"Geometry.{kind}: n_views {n_views} disagrees with the {len(scan['angles_deg'])} angles of angles_deg (give one of them)")
        elif n_views is None:
            raise ArgumentError(f"Geometry.{kind}: n_views (the number of views, evenly spaced over arc_deg) is required, or angles_deg listing each view's angle")
        else:
            scan["n_views"] = _count(n_views, "n_views")
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
    adjoint ``adjoint`` (A^T).

    `device` defaults to "cpu" (as do cgls and sirt), unlike reconstruct and sample ("auto"): each
    call builds the projector and copies the arrays to the device and back, and on the CPU the
    results are the same bit for bit from run to run (and as ``tomodiff project --device cpu``).
    Pass device="auto" or "cuda" to use a GPU."""

    def __init__(self, geometry: Geometry, device: str = "cpu"):
        self.geometry = geometry
        self.device = _text(device, "device")

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
    y, window = _f32(proj, geometry.proj_shape, "projections"), _text(window, "window")
    _warn_scan(geometry, "FBP/FDK")
    out = np.empty(geometry.volume_shape, np.float32)
    _td.fbp_into(geometry.to_json(), y, window, out)
    return out


def _warn_scan(geometry: Geometry, what: str) -> None:
    """What FBP/FDK cannot do exactly on this scan (``Geometry.warnings``), as UserWarnings
    pointing at the caller's caller, before the work, as the command line prints them."""
    for w in geometry.warnings():
        warnings.warn(f"{what}: {w}", UserWarning, stacklevel=3)


def _iterate(method, proj, geometry, iters, x0, lam, nonneg, device):
    iters, lam, device = _count(iters, "iters", 0), _real(lam, "relaxation"), _text(device, "device")
    x = np.zeros(geometry.volume_shape, np.float32) if x0 is None else _f32(x0, geometry.volume_shape, "x0").copy()
    _td.iterate(geometry.to_json(), method, _f32(proj, geometry.proj_shape, "projections"), x, iters, lam, bool(nonneg), device)
    return x


def cgls(proj, geometry: Geometry, iters: int = 20, x0=None, device: str = "cpu") -> np.ndarray:
    """`iters` (>= 0) CGLS iterations on min ||A x - proj||^2 from `x0` (zeros); `device` defaults
    to "cpu" (see Projector)."""
    return _iterate("cgls", proj, geometry, iters, x0, 1.0, False, device)


def sirt(proj, geometry: Geometry, iters: int = 100, x0=None, relaxation: float = 1.0, nonneg: bool = True, device: str = "cpu") -> np.ndarray:
    """`iters` (>= 0) SIRT iterations with `relaxation` in (0, 2) (x >= 0 with `nonneg`);
    `device` defaults to "cpu" (see Projector)."""
    return _iterate("sirt", proj, geometry, iters, x0, relaxation, nonneg, device)


def phantom(name: str, geometry: Geometry, seed: int = 0, supersample: int = 1) -> np.ndarray:
    """A phantom in 1/mm on the geometry's grid: shepp-logan, shepp-logan-ks, ellipsoids or chest
    (which fill the grid's box), or thorax (procedural anatomy in mm, centred on the origin: a grid
    of 1 mm voxels shows its central region; about 440 mm across frames the body); `seed`
    (0 <= seed < 2**64) varies the random ones. `supersample` K >= 1 renders it on a grid K times
    finer per axis and averages over each voxel, the mean attenuation a CT voxel holds (default
    1: as rendered, the value at each voxel centre for thorax and chest)."""
    name, seed, k = _text(name, "name"), _count(seed, "seed", 0), _count(supersample, "supersample")
    out = np.empty(geometry.volume_shape, np.float32)
    _td.phantom_into(name, geometry.to_json(), seed, k, out)
    return out


def add_poisson_noise(proj, geometry: Geometry, i0: float = 1e5, seed: int = 0) -> np.ndarray:
    """Line integrals with Poisson noise at `i0` (>= 1) incident photons per ray (a new array),
    seeded by `seed` (0 <= seed < 2**64)."""
    i0, seed = _real(i0, "i0"), _count(seed, "seed", 0)
    y = _f32(proj, geometry.proj_shape, "projections").copy()
    _td.poisson(y, geometry.proj_shape[2], i0, seed)
    return y


def load_model(path: Optional[str | os.PathLike] = None, config: Optional[str | os.PathLike] = None) -> Model:
    """A diffusion prior: safetensors weights at `path` with `config` (a preset name: paper,
    small, tiny; or the path of a JSON config; default the config.json beside the weights), or
    the shipped prior when `path` is None. Paths may be str or os.PathLike."""
    return _td.load_model(None if path is None else _path(path, "path"), None if config is None else _path(config, "config"))


_shipped: Optional[Model] = None


def _model(model: ModelLike) -> Model:
    global _shipped
    if model is None:
        if _shipped is None:
            _shipped = load_model()
        return _shipped
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, bytes, os.PathLike)):
        return load_model(model)
    raise ArgumentError(f"model must be a tomodiff.Model (see load_model), a path to safetensors weights, or None for the shipped prior; got {type(model).__name__} {model!r}")


@overload
def reconstruct(proj: npt.ArrayLike, geometry: Geometry, model: ModelLike = None, *, steps: int = ..., rounds: int = ..., cg_iters: int = ..., eta: float = ..., gamma: float = ..., start: str = ..., progressive: Optional[str] = ..., samples: int = ..., final_dc: bool = ..., average_below: Optional[int] = ..., batch: int = ..., seed: int = ..., device: str = ..., memory_budget: Optional[int] = ..., progress: Progress = ..., return_info: Literal[False] = ...) -> np.ndarray: ...
@overload
def reconstruct(proj: npt.ArrayLike, geometry: Geometry, model: ModelLike = None, *, steps: int = ..., rounds: int = ..., cg_iters: int = ..., eta: float = ..., gamma: float = ..., start: str = ..., progressive: Optional[str] = ..., samples: int = ..., final_dc: bool = ..., average_below: Optional[int] = ..., batch: int = ..., seed: int = ..., device: str = ..., memory_budget: Optional[int] = ..., progress: Progress = ..., return_info: Literal[True]) -> Tuple[np.ndarray, dict[str, Any]]: ...
@overload
def reconstruct(proj: npt.ArrayLike, geometry: Geometry, model: ModelLike = None, *, steps: int = ..., rounds: int = ..., cg_iters: int = ..., eta: float = ..., gamma: float = ..., start: str = ..., progressive: Optional[str] = ..., samples: int = ..., final_dc: bool = ..., average_below: Optional[int] = ..., batch: int = ..., seed: int = ..., device: str = ..., memory_budget: Optional[int] = ..., progress: Progress = ..., return_info: bool) -> Union[np.ndarray, Tuple[np.ndarray, dict[str, Any]]]: ...


def reconstruct(proj: npt.ArrayLike, geometry: Geometry, model: ModelLike = None, *, steps: int = 50, rounds: int = 2, cg_iters: int = 5, eta: float = 0.85, gamma: float = 0.0, start: str = "noise", progressive: Optional[str] = None, samples: int = 1, final_dc: bool = False, average_below: Optional[int] = 150, batch: int = 16, seed: int = 0, device: str = "auto", memory_budget: Optional[int] = None, progress: Progress = None, return_info: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, dict[str, Any]]]:
    """Reconstructs attenuation (nz, ny, nx) in 1/mm from line integrals with a diffusion prior
    (docs/RECONSTRUCTION.md): DDIM `steps` x `rounds` network passes, each followed by `cg_iters`
    CG iterations of data consistency. All arguments after `model` are keyword-only.

    Args:
        proj: the line integrals -ln(I / I0) (dimensionless), shape ``geometry.proj_shape``
            (views, rows, cols); any real dtype or layout (converted to float32).
        geometry: the scan, lengths in mm.
        model: a Model (``load_model``), a path to safetensors weights (read with the
            config.json beside them), or None for the shipped prior (loaded once, then kept).
        steps: DDIM steps, >= 1 (default 50), evenly spaced from t = 999 (or from T with
            start="fdk:T") down to 0.
        rounds: recurrent rounds per step (K), >= 1 (default 2): all but the last re-noise the
            estimate to the same level. Network passes: steps x rounds.
        cg_iters: CG iterations of data consistency after each network pass (M), >= 0 (default 5).
        eta: DDIM's stochasticity in [0, 1] (default 0.85): 0 is deterministic DDIM, 1 DDPM-like.
        gamma: damping of each CG solve towards the network's estimate, finite and >= 0
            (default 0: early-stopped CG).
        start: "noise" (default: pure noise at t = 999) or "fdk:T" with T in 1..999 (the FDK
            volume noised to timestep T, then sampled down from T: fewer passes, closer to FDK).
        progressive: None (default) or "STEPS:T", e.g. "25:400": coarse to fine, first the whole
            volume at half resolution (STEPS DDIM steps from noise), then the full one from its
            upsampled estimate noised to T (with `start` "noise": the two starts cannot be combined;
            the half volume, ceil(n / 2) per axis, must hold the network's patch, else
            ShapeError).
        samples: reconstructions averaged, >= 1 (default 1), with seeds seed .. seed + samples - 1:
            an estimate of the posterior mean, whose error is lower than one sample's, for
            `samples` times the passes and the time.
        final_dc: also run data consistency after the last network pass, as the paper does (its
            output x0_dc). Default False: the output is the last pass's estimate, clamped to
            [0, mu_max], without the streaks and negative values one more CG solve adds (0.15
            to 0.17 dB and 0.04 axial SSIM better on held-out thoraxes at 8 views,
            docs/RECONSTRUCTION.md). A run of a single pass (steps=1, rounds=1) keeps its solve
            either way.
        average_below: the output is the mean of the network's estimates over the passes at
            timesteps <= this, 0..999 (default 150: from noise, the last 8 of 50 steps x 2
            rounds), at no extra cost: closer to the posterior mean, 0.25 to 1 dB better on
            held-out thoraxes at 8 views (docs/RECONSTRUCTION.md). None: the last pass's
            estimate alone.
        batch: patches per network call, >= 1 (default 16): more is faster on a GPU and needs
            more memory (see memory_budget).
        seed: seeds the noise and the tiling offsets, 0 <= seed < 2**64 (default 0): the same
            seed gives the same volume (bit for bit on the CPU, on any thread count).
        device: "auto" (default: a GPU when there is one, else the CPU), "cpu", "emu", "cuda" or
            "cuda:N".
        memory_budget: bytes the job may hold on the device, >= 1, or None (default) for the
            device's own figure (90% of the free GPU memory on cuda; of the available host memory
            on the CPU). The estimate is checked before any work: MemoryBudgetError.
        progress: called as ``progress(done, total)`` (network passes, all samples') after each pass, with the
            GIL held; returning False (or any false value except None) cancels with
            CancelledError; an exception raised in it propagates.
        return_info: also return a dict: seconds, network_seconds, projector_seconds, passes,
            memory_estimate (bytes), device (the one used), warning (the data-range warning,
            or None) and last_pass_solved (whether the output had a CG solve after its last
            pass: final_dc=True, or a run of a single pass).

    Returns:
        The volume (nz, ny, nx), float32 in 1/mm; with `return_info`, (volume, info).

    Raises:
        ShapeError (proj of the wrong shape or dtype, non-finite values), ArgumentError (an
        argument out of range or of the wrong type, an unknown start or device),
        MemoryBudgetError, ModelError, DeviceError, CancelledError, and KeyboardInterrupt on
        Ctrl-C.

    Warns:
        UserWarning when the data's range (the 99.5th percentile of their FDK) is below 0.2 or
        above 2 times the prior's ``mu_max``, e.g. data in 1/cm or a geometry not in mm; the
        same text is ``info["warning"]``. FDK runs for this check whatever the start, as in
        ``tomodiff reconstruct``. With a start from FDK, also what FDK cannot do exactly on the
        scan (``Geometry.warnings``).
    """
    opts: dict[str, Any] = {
        "steps": _count(steps, "steps"),
        "rounds": _count(rounds, "rounds"),
        "cg_iters": _count(cg_iters, "cg_iters", 0),
        "eta": _real(eta, "eta"),
        "gamma": _real(gamma, "gamma"),
        "start": _text(start, "start"),
        "batch": _count(batch, "batch"),
        "seed": _count(seed, "seed", 0),
        "samples": _count(samples, "samples"),
        "final_dc": _flag(final_dc, "final_dc"),
        "average_below": None if average_below is None else _count(average_below, "average_below", 0, 999),
    }
    if memory_budget is not None:
        opts["memory_budget"] = _count(memory_budget, "memory_budget")
    if progressive is not None:
        opts["progressive"] = _text(progressive, "progressive")
    device, progress = _text(device, "device"), _callback(progress)
    m = _model(model)
    y = _f32(proj, geometry.proj_shape, "projections")
    if opts["start"] != "noise" and progressive is None:
        _warn_scan(geometry, "FDK start")
    out = np.empty(geometry.volume_shape, np.float32)
    info = _td.reconstruct_into(m, geometry.to_json(), y, out, opts, device, progress)
    if info.get("warning"):
        warnings.warn(info["warning"], UserWarning, stacklevel=2)
    return (out, info) if return_info else out


def sample(shape: Sequence[int], model: ModelLike = None, *, steps: int = 50, rounds: int = 1, eta: float = 0.85, batch: int = 16, seed: int = 0, device: str = "auto", progress: Progress = None) -> np.ndarray:
    """An unconditional sample of the prior, (nz, ny, nx) in 1/mm: `shape` positive integers, at
    least the network's patch (else ShapeError). `model`, `steps`, `rounds`, `eta`, `batch`,
    `seed`, `device` and `progress` as for ``reconstruct`` (here `rounds` defaults to 1)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ArgumentError(f"shape must be a sequence of 3 positive integers (nz, ny, nx), got {shape!r}") from None
    if len(dims) != 3:
        raise ShapeError(f"sample: a (nz, ny, nx) shape is needed, got {dims}")
    dims = tuple(_count(n, f"shape[{i}]") for i, n in enumerate(dims))
    opts = {"steps": _count(steps, "steps"), "rounds": _count(rounds, "rounds"), "eta": _real(eta, "eta"), "batch": _count(batch, "batch"), "seed": _count(seed, "seed", 0)}
    device, progress = _text(device, "device"), _callback(progress)
    m = _model(model)
    out = np.empty(dims, np.float32)
    _td.sample_into(m, list(dims), out, opts, device, progress)
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
