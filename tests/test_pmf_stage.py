"""The PMF stage: frame selection, training a peptide PMF, CG MD, JS, Müller-Brown check, table, kill/resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax.random as jr
import numpy as np
import pandas as pd
import pytest
import yaml

from cgbench import muller_brown as mb
from cgbench.cg_md import bead_masses, dihedral_js, run_cg_md
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import RBFPotential, load_pmf, save_pmf
from cgbench.pmf_evaluation import validate_muller_brown_pmf, write_pmf_table
from cgbench.pmf_training import (data_run, peptide_training_settings, select_training_frames, train_muller_brown_pmf,
                                  train_peptide_pmf)
from cgbench.resolutions import cg_mapping, map_positions, phi_psi

KT = 2.494
TINY_TRAINING = dict(epochs=2, batch_size=16, learning_rate=1e-3, final_learning_rate=0.01, clip_norm=10.0,
                     patience=5, validation_fraction=0.2, blocks=4, max_nonfinite=20)
FLOOR = {"queries": 50, "neighbours": 8, "min_separation": 2, "closest_fraction": 0.5}


def fake_dataset(n_per_replica=40, replicas=2, dt_ps=0.5):
    """Time, replica and weights of a dataset, and a per-frame array to follow through selection."""
    replica = np.repeat(np.arange(replicas), n_per_replica)
    time_ps = np.tile(dt_ps * np.arange(1, n_per_replica + 1), replicas)
    n = len(replica)
    return {"positions": np.arange(n, dtype=float)[:, None, None] * np.ones((1, 2, 3)), "forces": np.zeros((n, 2, 3)),
            "weights": np.full(n, 1.0 / n), "replica": replica, "time_ps": time_ps, "kT": KT, "run": "x"}


@pytest.mark.parametrize("max_time_ps, max_frames, expected", [
    (None, None, 80),
    (10.0, None, 40),        # 20 frames of each replica
    (None, 20, 20),          # every 4th frame
    (10.0, 15, 14),          # 40 frames cut, then every 3rd
])
def test_select_training_frames(max_time_ps, max_frames, expected):
    data = fake_dataset()
    out = select_training_frames(data, max_time_ps=max_time_ps, max_frames=max_frames)
    assert len(out["positions"]) == len(out["replica"]) == len(out["time_ps"]) == expected
    if max_time_ps is not None:
        assert out["time_ps"].max() <= max_time_ps
    assert out["weights"].sum() == pytest.approx(1.0)
    assert np.all(np.diff(out["positions"][:, 0, 0]) > 0)          # time order kept, replicas contiguous
    assert set(out["replica"]) == {0, 1}


@pytest.mark.parametrize(("by_resolution", "resolution", "epochs"), [
    ({}, "core_beta", 100),
    ({"core_beta": 30}, "core_beta", 30),
    ({"core_beta": 30}, "heavy_atom", 100),
])
def test_peptide_training_epochs_per_resolution(by_resolution, resolution, epochs):
    spec = {"training": {**TINY_TRAINING, "epochs": 100}, "epochs_by_resolution": by_resolution}
    settings = peptide_training_settings(spec, resolution)
    assert settings.epochs == epochs
    assert settings.batch_size == TINY_TRAINING["batch_size"]


def test_select_training_frames_rejects_an_empty_cut():
    with pytest.raises(ValueError, match="no frames"):
        select_training_frames(fake_dataset(), max_time_ps=0.1)


@pytest.mark.parametrize("data, environment, run", [
    ("biased", "explicit", "explicit_metad"), ("unbiased", "explicit", "explicit_unbiased"),
    ("biased", "obc2", "obc2_metad"), ("unbiased", "obc1", "obc1_unbiased"),
])
def test_data_run(data, environment, run):
    assert data_run(data, environment) == run


def test_dihedral_js_bounds():
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-3, -1, 2000), rng.uniform(1, 3, 2000)
    assert dihedral_js(phi, psi, phi, psi) == pytest.approx(0.0, abs=1e-12)
    assert dihedral_js(phi, psi, phi + 3.0, psi - 3.0) == pytest.approx(np.log(2), rel=1e-6)   # disjoint
    other = dihedral_js(phi, psi, rng.uniform(-3, -1, 2000), rng.uniform(1, 3, 2000))
    assert 0 < other < 0.2


@pytest.fixture(scope="module")
def ala2_core_beta():
    """ala2's core_beta mapping and 160 jiggled configurations of it (2 'replicas'), with forces
    of a harmonic restraint to the built structure plus noise (a stand-in for mapped forces)."""
    topology, positions = build_peptide(Peptide("A", "A"))
    mapping = cg_mapping(topology, "core_beta")
    rng = np.random.default_rng(0)
    frames = positions + 0.01 * rng.standard_normal((160, *positions.shape))
    x = np.asarray(map_positions(frames, mapping), np.float32)
    ref = np.asarray(map_positions(positions[None], mapping))[0]
    forces = (-1000.0 * (x - ref) + 50.0 * rng.standard_normal(x.shape)).astype(np.float32)
    phi, psi = (np.asarray(a) for a in phi_psi(x, mapping))
    data = {"positions": x, "forces": forces, "weights": np.full(len(x), 1 / len(x)),
            "replica": np.repeat([0, 1], 80), "time_ps": np.tile(np.arange(1, 81) * 0.5, 2), "phi": phi, "psi": psi,
            "kT": KT, "run": "obc2_metad", "peptide": "ala2"}
    return mapping, data


def test_train_peptide_pmf_writes_a_loadable_model(tmp_path, ala2_core_beta):
    mapping, data = ala2_core_beta
    spec = {"training_frames": 1000, "prior": {}, "network": {"hidden": 8, "interactions": 1, "n_rbf": 4, "cutoff": 0.5},
            "training": TINY_TRAINING, "floor": FLOOR}
    summary = train_peptide_pmf(data, mapping, spec=spec, kT=KT, seed=0, out=tmp_path, max_time_ps=30.0, progress=False)
    assert summary["train_frames"] + summary["validation_frames"] == 120          # 60 of each replica (30 ps)
    assert np.isfinite(summary["validation_force_rmse"]) and summary["force_floor_rmse"] >= 0
    model, hyper = load_pmf(tmp_path / "model.eqx")
    assert hyper["data"]["max_time_ps"] == 30.0 and hyper["resolution"] == "core_beta"
    assert json.loads((tmp_path / "training.json").read_text())["epochs"] == 2
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2
    assert not (tmp_path / "checkpoint.json").exists()
    assert np.isfinite(float(model(data["positions"][0])))


def test_train_peptide_pmf_refuses_nan_forces(tmp_path, ala2_core_beta):
    mapping, data = ala2_core_beta
    bad = dict(data, forces=np.full_like(data["forces"], np.nan))
    spec = {"training_frames": 1000, "prior": {}, "network": {"hidden": 8, "interactions": 1, "n_rbf": 4, "cutoff": 0.5},
            "training": TINY_TRAINING, "floor": FLOOR}
    with pytest.raises(ValueError, match="non-finite forces"):
        train_peptide_pmf(bad, mapping, spec=spec, kT=KT, seed=0, out=tmp_path, progress=False)


def test_cg_md_with_the_prior_keeps_bonds_and_drops_nothing(tmp_path, ala2_core_beta):
    from cgbench.pmf import PeptidePMF, SchNet, bead_graph, fit_prior

    mapping, data = ala2_core_beta
    graph = bead_graph(mapping)
    model = PeptidePMF(fit_prior(data["positions"], graph, kT=KT), SchNet(mapping.n_beads, hidden=8, interactions=1,
                                                                          n_rbf=4, key=jr.key(0)), KT)
    out = run_cg_md(model, data["positions"][:4], masses=bead_masses(mapping), temperature=300.0, timestep_fs=2.0,
                    friction=1.0, steps=400, report_interval=20, equilibration_steps=20, key=jr.key(1), chunks=2,
                    progress=False)
    assert out["positions"].shape == (4 * 20, 6, 3) and out["dropped_replicas"] == 0
    assert out["simulated_ns"] == pytest.approx(4 * 600 * 2e-6)                 # 20 steps rounded up to a chunk
    b = graph.bonds
    lengths = np.linalg.norm(out["positions"][:, b[:, 0]] - out["positions"][:, b[:, 1]], axis=-1)
    ref = np.linalg.norm(data["positions"][:, b[:, 0]] - data["positions"][:, b[:, 1]], axis=-1)
    assert np.abs(lengths.mean(0) - ref.mean(0)).max() < 0.01                    # nm: bonds stay bonds
    assert np.all(np.diff(out["time_ps"][:20]) > 0) and set(out["replica"]) == {0, 1, 2, 3}


def test_muller_brown_pmf_from_exact_equilibrium_forces(tmp_path):
    """Force matching on Müller-Brown data recovers the exact PMF (CG-BG's PMF error, kT²)."""
    from test_muller_brown import exact_samples

    # 400 short trajectories started from exact equilibrium draws: equilibrium data without waiting
    start = exact_samples(400, biased=True, seed=0)
    data = mb.generate_data(biased=True, trajectories=400, frames=30, equilibration_steps=0, start=start,
                            key=jr.key(0))
    spec = {"training_frames": 12000, "network": {"centres": 40, "rbf_width": 2.0, "width": 32, "depth": 2},
            "training": dict(TINY_TRAINING, epochs=40, batch_size=64, blocks=3, patience=40),
            "floor": {"queries": 2000, "neighbours": 16, "min_separation": 2, "closest_fraction": 0.5}}
    summary = train_muller_brown_pmf(data, spec=spec, seed=0, out=tmp_path, progress=False)
    save_pmf(tmp_path / "untrained.eqx", RBFPotential(low=10.0, high=50.0, centres=40, rbf_width=2.0, width=32,
                                                       key=jr.key(5)), {})
    check = validate_muller_brown_pmf(tmp_path / "model.eqx", out=tmp_path / "validation")
    exact_floor = np.sqrt(mb.exact_force_floor(biased=True))
    assert summary["force_floor_rmse"] == pytest.approx(exact_floor, rel=0.1)
    assert summary["validation_force_rmse"] == pytest.approx(exact_floor, rel=0.1)
    assert check["pmf_error"] < 0.05                                             # the issue's bound for PMF_B
    untrained = validate_muller_brown_pmf(tmp_path / "untrained.eqx", out=tmp_path / "untrained")
    assert untrained["pmf_error"] > 1.0                                          # negative control
    assert (tmp_path / "validation" / "curves.npz").exists()


def test_pmf_table_gathers_rows(tmp_path):
    config = {"seed": 0, "pmf": {"environment": "obc2"}, "preset": "smoke"}
    folders = []
    for system, kind, res, data in (("muller_brown", "rbf", None, "biased"), ("ala2", "peptide", "core_beta", "unbiased")):
        folder = tmp_path / system / "pmf" / (res or "") / data if res else tmp_path / system / "pmf" / data
        (folder / "validation").mkdir(parents=True)
        training = {"kind": kind, "train_frames": 10, "validation_force_rmse": 1.0, "force_floor_rmse": 0.9,
                    "epochs": 2, "training_s": 1.0, "data": {"simulated_ns": 1.0}}
        validation = ({"pmf_error": 0.01} if kind == "rbf" else
                      {"cg_md_js": 0.02, "populations": [{"phi_positive": 0.0}],
                       "populations_reference": [{"phi_positive": 0.02}], "cg_md_ns": 1.0, "dropped_replicas": 0,
                       "validation_s": 2.0})
        (folder / "training.json").write_text(json.dumps(training))
        (folder / "validation" / "validation.json").write_text(json.dumps(validation))
        folders.append(folder)
    csv, md = write_pmf_table(folders, tmp_path / "tables" / "pmf.csv", config)
    table = pd.read_csv(csv)
    assert list(table["system"]) == ["muller_brown", "ala2"] and list(table["resolution"]) == ["x", "core_beta"]
    assert table.loc[0, "pmf_error"] == 0.01 and table.loc[1, "cg_md_js"] == 0.02
    assert "PMF_B" in md.read_text() and (tmp_path / "tables" / "pmf.csv.provenance.json").exists()


def test_pmf_train_killed_and_rerun_equals_an_uninterrupted_run(tmp_path):
    """`cgbench pmf-train` killed with SIGKILL mid-training resumes from its checkpoint to the
    same model as a run that was never interrupted."""
    data = mb.generate_data(biased=False, trajectories=4, frames=2000, equilibration_steps=1000, key=jr.key(3))
    mb.write_data(tmp_path / "data.npz", data)
    raw = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "config.yaml")))
    training = raw["presets"]["smoke"]["muller_brown"]["pmf"]["training"]
    training.update(epochs=40, patience=40)                      # long enough to be killed mid-way
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))

    def command(out):
        return [sys.executable, "-m", "cgbench", "--config", str(tmp_path / "config.yaml"), "--preset", "smoke",
                "pmf-train", "--system", "muller_brown", "--data", "unbiased", "--dataset", str(tmp_path / "data.npz"),
                "--out", str(out), "--no-progress"]

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run(command(tmp_path / "whole"), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.eqx").exists()
    subprocess.run(command(tmp_path / "killed"), check=True, env=env, capture_output=True, timeout=600)
    a, _ = load_pmf(tmp_path / "whole" / "model.eqx")
    b, _ = load_pmf(tmp_path / "killed" / "model.eqx")
    x = np.linspace(15, 45, 31, dtype=np.float32)[:, None]
    np.testing.assert_array_equal([float(a(v)) for v in x], [float(b(v)) for v in x])
    assert (json.loads((tmp_path / "whole" / "training.json").read_text())["validation_force_rmse"]
            == json.loads((tmp_path / "killed" / "training.json").read_text())["validation_force_rmse"])
