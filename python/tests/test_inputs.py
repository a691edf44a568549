"""The package's handling of its inputs: the data-range warning whatever the start, counts and
seeds checked before any work (ArgumentError naming the argument), false progress values cancel,
numpy values in geometry documents, path-like configs, clear errors for a missing n_views or a
model of the wrong type, messages without command-line flags, documented parameters."""

import inspect
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import tomodiff as td

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / "tiny-chest"


@pytest.fixture(scope="module")
def small():
    g = td.Geometry.cone((32, 32, 32), det_shape=(52, 64), n_views=4, source_origin=96, origin_detector=48, det_spacing=(1.5, 1.5))
    return g, td.Projector(g).forward(td.phantom("chest", g, seed=5))


def test_range_warning_from_a_noise_start(small):
    g, proj = small
    with pytest.warns(UserWarning, match="times the prior's range") as caught:
        rec, info = td.reconstruct(proj * 10, g, steps=np.int64(1), rounds=1, device="cpu", return_info=True)
    assert info["warning"] and info["warning"] == str(caught[0].message)
    assert rec.shape == g.volume_shape and info["passes"] == 1
    assert info["last_pass_solved"] is True, "a single pass keeps its solve"
    # Data in the prior's range: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = td.reconstruct(proj, g, steps=1, rounds=1, device="cpu", return_info=True)
    assert info["warning"] is None


def test_scan_warnings_from_fbp_and_an_fdk_start(small):
    # Angles that look like radians: FBP and a start from FDK warn, as the command line does; a
    # start from noise does not use FDK's reconstruction and stays quiet about the scan.
    g = td.Geometry.cone((32, 32, 32), det_shape=(52, 64), angles_deg=[0, 0.5, 1, 1.5, 2, 2.5], source_origin=96, origin_detector=48, det_spacing=(1.5, 1.5))
    assert any("radians" in w for w in g.warnings())
    proj = td.Projector(g).forward(td.phantom("chest", g, seed=5))

    def said(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(w.message) for w in caught if w.category is UserWarning]

    assert any(w.startswith("FBP/FDK: the 6 angles lie within") for w in said(lambda: td.fbp(proj, g)))
    assert any(w.startswith("FDK start: the 6 angles lie within") for w in said(lambda: td.reconstruct(proj, g, steps=1, rounds=1, start="fdk:100", device="cpu")))
    assert not any("angles lie within" in w for w in said(lambda: td.reconstruct(proj, g, steps=1, rounds=1, device="cpu")))


def bad_calls(g, proj):
    return [
        ("steps must be a positive integer, got -1", lambda: td.reconstruct(proj, g, steps=-1)),
        ("steps must be a positive integer, got 0", lambda: td.reconstruct(proj, g, steps=0)),
        ("steps must be a positive integer, got 2.5", lambda: td.reconstruct(proj, g, steps=2.5)),
        ("steps must be a positive integer, got True", lambda: td.reconstruct(proj, g, steps=True)),
        ("rounds must be a positive integer, got 0", lambda: td.reconstruct(proj, g, rounds=0)),
        ("cg_iters must be a non-negative integer, got -1", lambda: td.reconstruct(proj, g, cg_iters=-1)),
        ("seed must be a non-negative integer, got -1", lambda: td.reconstruct(proj, g, seed=-1)),
        ("seed must be a non-negative integer up to", lambda: td.reconstruct(proj, g, seed=2**64)),
        ("memory_budget must be a positive integer, got -1", lambda: td.reconstruct(proj, g, memory_budget=-1)),
        ("batch must be a positive integer, got 0", lambda: td.reconstruct(proj, g, batch=0)),
        ("batch must be a positive integer, got -3", lambda: td.reconstruct(proj, g, batch=-3)),
        ("eta must be a real number, got 'high'", lambda: td.reconstruct(proj, g, eta="high")),
        ("device must be a string, got 0", lambda: td.reconstruct(proj, g, device=0)),
        ("progress must be a callable", lambda: td.reconstruct(proj, g, progress=True)),
        ("iters must be a non-negative integer, got -1", lambda: td.cgls(proj, g, iters=-1)),
        ("iters must be a non-negative integer, got -1", lambda: td.sirt(proj, g, iters=-1)),
        ("seed must be a non-negative integer, got -1", lambda: td.phantom("chest", g, seed=-1)),
        ("seed must be a non-negative integer, got -1", lambda: td.add_poisson_noise(proj, g, seed=-1)),
        ("steps must be a positive integer, got -1", lambda: td.sample((16, 16, 16), steps=-1)),
        ("batch must be a positive integer, got 0", lambda: td.sample((16, 16, 16), batch=0)),
        ("shape[0] must be a positive integer, got -16", lambda: td.sample((-16, 16, 16))),
        ("n_views must be a positive integer, got -4", lambda: td.Geometry.cone((8, 8, 8), (8, 8), -4, source_origin=50, origin_detector=30)),
    ]


def test_bad_counts_raise_argument_errors_naming_the_argument(small):
    g, proj = small
    for want, call in bad_calls(g, proj):
        with pytest.raises(td.ArgumentError, match=re.escape(want)):
            call()


def test_a_false_progress_value_cancels(small):
    g, proj = small
    seen = []

    def zero_at_two(k, n):
        seen.append(k)
        return 0 if k == 2 else None  # None goes on; 0 is false: cancel

    with pytest.raises(td.CancelledError):
        td.reconstruct(proj, g, steps=20, device="cpu", progress=zero_at_two)
    assert seen == [1, 2]
    # Truthy values other than True go on.
    rec = td.reconstruct(proj, g, steps=1, rounds=1, device="cpu", progress=lambda k, n: 1)
    assert rec.shape == g.volume_shape


def test_geometry_from_numpy_values_and_required_views():
    g = td.Geometry.cone((32, 32, 32), det_shape=(52, 64), n_views=4, source_origin=96, origin_detector=48)
    doc = g.to_dict()
    doc["volume"]["shape"] = list(np.array([32, 32, 32]))
    doc["volume"]["voxel_size"] = np.ones(3)
    doc["scan"]["n_views"] = np.int64(4)
    doc["scan"]["source_origin"] = np.float32(96.0)
    assert td.Geometry.from_dict(doc).to_dict() == g.to_dict()
    assert td.Geometry.cone(np.array([32, 32, 32]), np.array([52, 64]), np.int32(4), source_origin=np.float64(96), origin_detector=48).to_dict() == g.to_dict()
    with pytest.raises(td.GeometryError, match="object value .* is not JSON"):
        td.Geometry.from_dict({"volume": {"shape": object()}, "scan": {}})
    with pytest.raises(td.ArgumentError, match="n_views .* is required"):
        td.Geometry.cone((32, 32, 32), (52, 64), source_origin=96, origin_detector=48)
    with pytest.raises(td.ArgumentError, match="disagrees"):
        td.Geometry.parallel((8, 8, 8), (8, 8), 3, angles_deg=[0, 90])
    assert td.Geometry.parallel((8, 8, 8), (8, 8), angles_deg=[0, 45, 90]).proj_shape == (3, 8, 8)


def test_models_from_path_likes_and_clear_type_errors(small, tmp_path):
    g, proj = small
    m = td.load_model(SHIPPED / "weights.safetensors", config=SHIPPED / "config.json")
    assert m.mu_max == td.load_model().mu_max
    with pytest.raises(td.ArgumentError, match="model must be a tomodiff.Model"):
        td.reconstruct(proj, g, model=5)
    with pytest.raises(td.ArgumentError, match="config must be a path"):
        td.load_model(SHIPPED / "weights.safetensors", config=3)


def test_messages_name_no_command_line_flags(small, tmp_path):
    g, proj = small
    with pytest.raises(td.ArgumentError, match="fdk:T") as e:
        td.reconstruct(proj, g, steps=1, start="fdk", device="cpu")
    assert "--" not in str(e.value)
    shutil.copy(SHIPPED / "weights.safetensors", tmp_path / "w.safetensors")
    with pytest.raises(td.ModelError, match="no config.json beside") as e:
        td.load_model(tmp_path / "w.safetensors")
    assert "--" not in str(e.value)


def test_documented_and_typed():
    doc = td.reconstruct.__doc__
    for name in inspect.signature(td.reconstruct).parameters:
        assert re.search(rf"^\s+{name}:", doc, re.M), f"reconstruct's docstring does not describe {name}"
    assert '"fdk:T"' in doc and "return_info" in doc
    assert inspect.signature(td.reconstruct).return_annotation != inspect.Signature.empty
    assert all(p.kind == p.KEYWORD_ONLY for p in list(inspect.signature(td.reconstruct).parameters.values())[3:])
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", td.__version__)
    assert "not finite" in td.ShapeError.__doc__ and "dtype" in td.ShapeError.__doc__
    assert td.ShapeError.__module__ == "tomodiff"
