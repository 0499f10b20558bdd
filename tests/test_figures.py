"""Smoke test of the figures: tiny flows trained for a few updates, fake NUTS samples."""

import copy
import json

import numpy as np
import pytest

from cgbench.config import load_config
from cgbench.ecg import train_ecg
from cgbench.figures import synthetic_figures
from cgbench.targets import make_target


@pytest.fixture(scope="module")
def tiny_config():
    config = copy.deepcopy(load_config(preset="smoke"))
    config["evaluation"]["samples"] = 400
    for block in config["ecg"].values():
        block["flow"].update(layers=1, mlp_width=8, mlp_depth=1, knots=4)
        block["batch_size"] = 16
        block["tempering"].update(beta_0=0.1, delta_beta=0.45, updates_at_beta_0=2, updates_per_step=1)
        block["checkpoint_every"] = 1000
    return config


@pytest.mark.parametrize("name, expected", [
    ("double_well", ["histograms", "tempering", "marginals"]),
    ("gmm_2d", ["samples", "marginals"]),
])
def test_synthetic_figures_written(tmp_path, tiny_config, name, expected):
    config = tiny_config
    target = make_target(name, config["targets"][name])
    train_ecg(target, config["ecg"][name], "fixed", tmp_path / "ecg", seed=0, progress=False)
    rng = np.random.default_rng(0)
    nuts = tmp_path / "nuts.npz"
    np.savez(nuts, z=rng.normal(size=(200, target.dim_z)).astype(np.float32),
             x=rng.normal(size=(200, target.dim_x)).astype(np.float32), chains=2, beta=1.0)

    out_dir = tmp_path / "figures"
    paths = synthetic_figures(name, {"ecg": tmp_path / "ecg"}, nuts, out_dir, config)

    pngs = [out_dir / f"{name}_{what}.png" for what in expected]
    manifest = out_dir / f"{name}.manifest.json"
    assert paths == pngs + [manifest]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    doc = json.loads(manifest.read_text())
    assert [f["file"] for f in doc["figures"]] == [p.name for p in pngs]
    assert all(f["caption"] for f in doc["figures"])
    assert doc["provenance"]["seed"] == config["seed"] and doc["provenance"]["config_hash"]
