"""The Python package against the command line and the library: the same inputs give the same
arrays; bad inputs raise the named exceptions; cancelling and Ctrl-C stop a reconstruction."""

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import tomodiff as td

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TOMODIFF_BIN", str(REPO / "target" / "release" / "tomodiff"))


def cli(*args):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"tomodiff {' '.join(map(str, args))}:\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def scan():
    g = td.Geometry.cone((64, 64, 64), det_shape=(104, 128), n_views=8, source_origin=192, origin_detector=96, det_spacing=(1.5, 1.5))
    truth = td.phantom("chest", g, seed=20261124)
    proj = td.add_poisson_noise(td.Projector(g).forward(truth), g, i0=1e5, seed=1)
    return g, truth, proj


def test_geometry_builders_agree(tmp_path):
    g = td.Geometry.cone((8, 10, 12), det_shape=(6, 9), n_views=4, source_origin=50, origin_detector=30)
    assert (g.volume_shape, g.proj_shape) == ((8, 10, 12), (4, 6, 9))
    assert td.Geometry.from_json(g.to_json()).to_dict() == g.to_dict()
    (tmp_path / "g.json").write_text(g.to_json())
    assert td.Geometry.from_file(tmp_path / "g.json").proj_shape == (4, 6, 9)
    # The same views as ASTRA cone_vec rows: source, detector centre, u, v.
    rows = []
    for k in range(4):
        b = np.deg2rad(90.0 * k)
        e, u = np.array([np.cos(b), np.sin(b), 0.0]), np.array([-np.sin(b), np.cos(b), 0.0])
        rows.append([*(50 * e), *(-30 * e), *u, 0, 0, 1])
    gv = td.Geometry.astra_vectors("cone_vec", (8, 10, 12), (6, 9), rows)
    x = np.random.default_rng(0).random((8, 10, 12), dtype=np.float32)
    a, b = td.Projector(g).forward(x), td.Projector(gv).forward(x)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_projector_and_fdk_equal_the_command_line(tmp_path, scan):
    g, truth, _ = scan
    (tmp_path / "g.json").write_text(g.to_json())
    np.save(tmp_path / "vol.npy", truth)
    cli("project", "--geometry", tmp_path / "g.json", "-i", tmp_path / "vol.npy", "-o", tmp_path / "p.npy", "--device", "cpu")
    y = td.Projector(g).forward(truth)
    assert np.array_equal(np.load(tmp_path / "p.npy"), y)
    cli("fbp", "--geometry", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "f.npy", "--window", "hann")
    assert np.array_equal(np.load(tmp_path / "f.npy"), td.fbp(y, g, window="hann"))
    # The adjoint: <A x, A x> = <x, A^T A x>.
    back = td.Projector(g).adjoint(y)
    lhs, rhs = float(np.vdot(y, y)), float(np.vdot(truth.astype(np.float64), back))
    assert abs(lhs - rhs) <= 1e-4 * lhs


def test_inputs_are_converted_or_refused(tmp_path, scan):
    g, truth, proj = scan
    want = td.fbp(proj, g)
    assert np.array_equal(td.fbp(proj.astype(np.float64), g), want)
    assert np.array_equal(td.fbp(np.asfortranarray(proj), g), want)
    with pytest.raises(td.ShapeError, match="the geometry needs"):
        td.fbp(proj[:4], g)
    with pytest.raises(td.ShapeError, match="not real numbers"):
        td.fbp(proj.astype(np.complex64), g)
    bad = proj.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(td.ShapeError, match="non-finite"):
        td.cgls(bad, g)
    with pytest.raises(td.ShapeError, match="out of float32 range"):
        td.Projector(g).forward(np.full(g.volume_shape, 1e39))
    with pytest.raises(td.GeometryError, match="det_shape"):
        td.Geometry.from_dict({"volume": {"shape": [4, 4, 4]}, "scan": {"type": "cone", "n_views": 2}})
    with pytest.raises(td.ArgumentError, match="unknown filter window"):
        td.fbp(proj, g, window="box")
    with pytest.raises(td.ArgumentError, match="unknown device"):
        td.Projector(g, device="tpu").forward(truth)
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        td.load_model("/nonexistent/weights.safetensors", config="tiny")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(td.ModelError, match="junk.safetensors"):
        td.load_model(tmp_path / "junk.safetensors", config="tiny")
    with pytest.raises(td.MemoryBudgetError, match="the budget is"):
        td.reconstruct(proj, g, steps=1, device="cpu", memory_budget=1000)


def test_reconstruct_equals_the_command_line_bit_for_bit(tmp_path, scan):
    g, truth, proj = scan
    (tmp_path / "g.json").write_text(g.to_json())
    np.save(tmp_path / "p.npy", proj)
    cli("reconstruct", "-g", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "r.npy", "--steps", 2, "--seed", 3, "--device", "cpu")
    seen = []
    rec, info = td.reconstruct(proj, g, steps=2, seed=3, device="cpu", progress=lambda k, n: seen.append((k, n)), return_info=True)
    assert np.array_equal(np.load(tmp_path / "r.npy"), rec)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and info["passes"] == 4
    assert info["last_pass_solved"] is False, "the default leaves out the last solve"
    assert td.metrics(rec, truth)["psnr"] > td.metrics(td.fbp(proj, g), truth)["psnr"] + 3


def small_scan():
    g = td.Geometry.cone((32, 32, 32), det_shape=(52, 64), n_views=4, source_origin=96, origin_detector=48, det_spacing=(1.5, 1.5))
    return g, td.Projector(g).forward(td.phantom("chest", g, seed=5))


def test_progressive_equals_the_command_line(tmp_path):
    g, proj = small_scan()
    (tmp_path / "g.json").write_text(g.to_json())
    np.save(tmp_path / "p.npy", proj)
    cli("reconstruct", "-g", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "r.npy", "--steps", 2, "--rounds", 1, "--progressive", "2:300", "--device", "cpu")
    seen = []
    rec = td.reconstruct(proj, g, steps=2, rounds=1, progressive="2:300", device="cpu", progress=lambda k, n: seen.append(n))
    assert np.array_equal(np.load(tmp_path / "r.npy"), rec)
    assert seen[0] == 4, "2 coarse passes and 2 fine ones"
    with pytest.raises(td.ArgumentError, match="STEPS:T"):
        td.reconstruct(proj, g, progressive="2", device="cpu")
    with pytest.raises(td.ShapeError, match="half the volume"):
        td.reconstruct(proj[:, :, :], td.Geometry.cone((16, 32, 32), det_shape=(52, 64), n_views=4, source_origin=96, origin_detector=48, det_spacing=(1.5, 1.5)), progressive="2:300", device="cpu")


def test_supersampled_phantom_equals_the_command_line(tmp_path):
    g = td.Geometry.parallel((8, 12, 12), det_shape=(8, 18), n_views=2, voxel_size=(36.0, 36.0, 36.0))
    (tmp_path / "g.json").write_text(g.to_json())
    cli("phantom", "thorax", "--geometry", tmp_path / "g.json", "--seed", 3, "--supersample", 2, "-o", tmp_path / "t.npy")
    avg = td.phantom("thorax", g, seed=3, supersample=2)
    assert np.array_equal(np.load(tmp_path / "t.npy"), avg)
    assert not np.array_equal(avg, td.phantom("thorax", g, seed=3))
    with pytest.raises(td.ArgumentError, match="supersample"):
        td.phantom("thorax", g, supersample=0)


def test_samples_average_consecutive_seeds_as_the_command_line(tmp_path):
    g, proj = small_scan()
    (tmp_path / "g.json").write_text(g.to_json())
    np.save(tmp_path / "p.npy", proj)
    cli("reconstruct", "-g", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "r.npy", "--steps", 2, "--rounds", 1, "--samples", 2, "--seed", 4, "--device", "cpu")
    mean, info = td.reconstruct(proj, g, steps=2, rounds=1, samples=2, seed=4, device="cpu", return_info=True)
    assert np.array_equal(np.load(tmp_path / "r.npy"), mean)
    assert info["passes"] == 4
    a, b = (td.reconstruct(proj, g, steps=2, rounds=1, seed=s, device="cpu") for s in (4, 5))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-7)
    with pytest.raises(td.ArgumentError, match="samples"):
        td.reconstruct(proj, g, samples=0, device="cpu")


def test_final_dc_and_average_below_equal_the_command_line(tmp_path):
    g, proj = small_scan()
    (tmp_path / "g.json").write_text(g.to_json())
    np.save(tmp_path / "p.npy", proj)
    cli("reconstruct", "-g", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "r.npy", "--steps", 2, "--rounds", 1, "--final-dc", "--device", "cpu")
    dc = td.reconstruct(proj, g, steps=2, rounds=1, final_dc=True, device="cpu")
    assert np.array_equal(np.load(tmp_path / "r.npy"), dc)
    plain = td.reconstruct(proj, g, steps=2, rounds=1, device="cpu")
    assert not np.array_equal(plain, dc), "the last solve changes the output"
    mu_max = td.load_model().mu_max
    assert plain.min() >= 0 and plain.max() <= mu_max * (1 + 1e-6), "the network's clamped estimate"
    with pytest.raises(td.ArgumentError, match="final_dc must be True or False"):
        td.reconstruct(proj, g, final_dc=1, device="cpu")
    # average_below: the mean of both passes' estimates (t = 999 and 0), as --average-below.
    cli("reconstruct", "-g", tmp_path / "g.json", "-i", tmp_path / "p.npy", "-o", tmp_path / "a.npy", "--steps", 2, "--rounds", 1, "--average-below", 999, "--device", "cpu")
    both = td.reconstruct(proj, g, steps=2, rounds=1, average_below=999, device="cpu")
    assert np.array_equal(np.load(tmp_path / "a.npy"), both)
    last = td.reconstruct(proj, g, steps=2, rounds=1, average_below=None, device="cpu")
    assert np.array_equal(last, plain), "at 150 only the last pass (t = 0) is averaged"
    assert not np.array_equal(both, last), "two estimates averaged"
    with pytest.raises(td.ArgumentError, match="average_below must be a non-negative integer up to 999"):
        td.reconstruct(proj, g, average_below=1000, device="cpu")


def test_cancel_and_callback_errors():
    g, proj = small_scan()
    with pytest.raises(td.CancelledError):
        td.reconstruct(proj, g, steps=20, device="cpu", progress=lambda k, n: k < 2)

    def boom(k, n):
        raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        td.reconstruct(proj, g, steps=20, device="cpu", progress=boom)


def test_ctrl_c_stops_a_reconstruction():
    g, proj = small_scan()
    # Python's own handler, even where the runner inherited SIGINT ignored (a background job of a
    # non-interactive shell), which Python then leaves ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            td.reconstruct(proj, g, steps=200, device="cpu")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_sample_is_seeded_and_in_range():
    a = td.sample((16, 16, 16), steps=3, seed=1, device="cpu")
    b = td.sample((16, 16, 16), steps=3, seed=1, device="cpu")
    m = td.load_model()
    assert a.shape == (16, 16, 16) and np.array_equal(a, b)
    assert a.min() >= -1e-6 and a.max() <= m.mu_max * (1 + 1e-6)
    assert json.loads(m.config_json)["patch"] == [16, 16, 16]
