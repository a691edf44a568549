"""tools/pt_to_safetensors.py on checkpoints made by the PyTorch reference (tests/fixtures/converter,
written by tools/make_converter_fixtures.py): the architecture is inferred (attention at factor 4
and 8), an EMA shadow_params list is named and preferred, and `tomodiff model run` with the
written config matches PyTorch; a config that disagrees with the converter's metadata is refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "converter"
BIN = os.environ.get("TOMODIFF_BIN", str(REPO / "target" / "release" / "tomodiff"))
sys.path.insert(0, str(REPO / "tools"))
from safetensors_io import load  # noqa: E402


def convert(src, out, *extra):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "pt_to_safetensors.py"), str(src), str(out), "--patch", "16,16,16",
                        "--norm-groups", "4", "--head-channels", "8", *extra], capture_output=True, text=True)
    return r


def run_model(folder, io):
    out = folder / "out.safetensors"
    r = subprocess.run([BIN, "model", "run", "--config", str(folder / "config.json"), "--weights", str(folder / "weights.safetensors"),
                        "--input", str(io), "--output", str(out), "--device", "cpu"], capture_output=True, text=True)
    return r, out


@pytest.mark.parametrize("name,ds,taken", [("ds4.pt", 4, "the state_dict"), ("ds8_ema.pt", 8, "the EMA (shadow_params")])
def test_converted_checkpoints_match_pytorch(tmp_path, name, ds, taken):
    r = convert(FIX / name, tmp_path / "weights.safetensors")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {taken}"), r.stdout
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"], cfg["attention_ds"]) == (8, [1, 1, 2, 2], 1, [ds])
    io = FIX / f"ds{ds}_io.safetensors"
    r, out = run_model(tmp_path, io)
    assert r.returncode == 0, r.stderr
    got, want = load(out)[0]["eps"], load(io)[0]["eps"]
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


def test_a_fixed_head_count(tmp_path):
    """guided-diffusion's num_heads (a head count, not a head size): converted with --num-heads it
    matches PyTorch; read with a head size instead, it computes something else."""
    r = convert(FIX / "heads4.pt", tmp_path / "weights.safetensors", "--num-heads", "4")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_heads"] == 4 and "head_channels" not in cfg
    io = FIX / "heads4_io.safetensors"
    r, out = run_model(tmp_path, io)
    assert r.returncode == 0, r.stderr
    got, want = load(out)[0]["eps"], load(io)[0]["eps"]
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()
    (tmp_path / "config.json").write_text(json.dumps(dict({k: v for k, v in cfg.items() if k != "num_heads"}, head_channels=8)))
    r, out = run_model(tmp_path, io)
    assert r.returncode != 0 and "converted with num_heads 4, the config says head_channels 8" in r.stderr, r.stderr


def test_state_dict_of_an_ema_checkpoint_on_request(tmp_path):
    r = convert(FIX / "ds8_ema.pt", tmp_path / "weights.safetensors", "--weights", "state_dict")
    assert r.returncode == 0 and r.stdout.startswith("wrote the state_dict"), r.stdout + r.stderr
    r, out = run_model(tmp_path, FIX / "ds8_io.safetensors")
    got, ema = load(out)[0]["eps"], load(FIX / "ds8_io.safetensors")[0]["eps"]
    assert np.abs(got - ema).max() > 1e-2  # other weights than the EMA's


def test_settings_a_state_dict_cannot_show_are_checked_at_load(tmp_path):
    assert convert(FIX / "ds4.pt", tmp_path / "weights.safetensors").returncode == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key, value in [("norm_groups", 8), ("head_channels", 16), ("prediction", "v"), ("mu_min", 0.01)]:
        (tmp_path / "config.json").write_text(json.dumps(dict(cfg, **{key: value})))
        r, out = run_model(tmp_path, FIX / "ds4_io.safetensors")
        assert r.returncode != 0 and f"converted with {key}" in r.stderr, r.stderr
        assert not out.exists()


def test_z_scored_models_state_their_intensity_map(tmp_path):
    r = convert(FIX / "ds4.pt", tmp_path / "weights.safetensors", "--mu-min", "0.015", "--mu-max", "0.025", "--no-clip")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["mu_min"], cfg["mu_max"], cfg["clip_x0"]) == (0.015, 0.025, False)
    r, out = run_model(tmp_path, FIX / "ds4_io.safetensors")
    assert r.returncode == 0 and out.exists(), r.stderr


def test_bad_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    r = convert(junk, tmp_path / "w.safetensors")
    assert r.returncode != 0 and "not a zip-format PyTorch checkpoint" in r.stderr
    r = convert(FIX / "ds4.pt", tmp_path / "w.safetensors", "--weights", "ema")
    assert r.returncode != 0 and "has no 'ema'" in r.stderr
    r = convert(FIX / "ds4.pt", tmp_path / "w.safetensors", "--patch", "16,16")
    assert r.returncode != 0 and "--patch" in r.stderr
