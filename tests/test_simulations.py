"""The simulations table: per-run rows from dihedral series, and the agreement of reweighted
metadynamics and NUTS with unbiased MD."""

import numpy as np
import pandas as pd
import pytest

from cgbench.config import load_config
from cgbench.simulations import COLUMNS, _agreement, diagnostics_rows, write_simulations_table


def _rows(run, phi, psi, weights=None, replica=None):
    n = len(phi)
    weights = np.full(n, 1 / n) if weights is None else weights
    replica = np.zeros(n, int) if replica is None else replica
    return diagnostics_rows("ala2", run, phi[:, None], psi[:, None], weights, replica, blocks=5, ns=1.0,
                            ns_per_day=10.0)


def test_rows_count_basins_and_name_the_run():
    rng = np.random.default_rng(0)
    # 60 % beta (psi = 2.5), 30 % alpha_R (psi = -0.7), 10 % phi > 0 (phi = 1.0), shuffled.
    labels = rng.permutation(np.repeat([0, 1, 2], [600, 300, 100]))
    phi = np.where(labels == 2, 1.0, -1.4)
    psi = np.where(labels == 0, 2.5, -0.7)
    (row,) = _rows("obc2_metad", phi, psi)
    assert (row["environment"], row["kind"], row["residue"]) == ("obc2", "metad", 0)
    assert row["pop_beta"] == pytest.approx(0.6) and row["pop_alpha_R"] == pytest.approx(0.3)
    assert row["pop_phi_positive"] == pytest.approx(0.1)
    assert 0 < row["pop_beta_err"] < 0.05 and row["ess_fraction"] == pytest.approx(1.0)
    assert list(row) == COLUMNS


def test_agreement_measures_differences_in_error_bars(tmp_path):
    base = {"peptide": "ala2", "environment": "obc2", "residue": 0, "replicas": 2, "frames": 100, "ns": 1.0,
            "ns_per_day": 1.0, "transitions": 0, "ess_fraction": 1.0}
    pops = {"unbiased": (0.6, 0.3, 0.1), "metad": (0.5, 0.4, 0.1), "nuts": (0.7, 0.3, 0.0)}
    table = pd.DataFrame([{**base, "kind": kind, "pop_phi_positive": p[2], "pop_phi_positive_err": 0.0,
                           "pop_beta": p[0], "pop_beta_err": 0.03, "pop_alpha_R": p[1], "pop_alpha_R_err": 0.04}
                          for kind, p in pops.items()])
    agreement = _agreement(table).set_index(["kind", "basin"])
    assert agreement.loc[("metad", "beta"), "z"] == pytest.approx(-0.1 / np.hypot(0.03, 0.03))
    assert agreement.loc[("metad", "alpha_R"), "z"] == pytest.approx(0.1 / np.hypot(0.04, 0.04))
    assert agreement.loc[("metad", "phi_positive"), "z"] == 0.0  # equal, no error: agree
    assert agreement.loc[("nuts", "alpha_R"), "z"] == 0.0
    assert np.isnan(agreement.loc[("nuts", "phi_positive"), "z"])  # NUTS never went there: no error bar
    assert "never visited by nuts" in agreement.loc[("nuts", "phi_positive"), "note"]
    inputs = []
    for kind, part in table.groupby("kind"):
        inputs.append(tmp_path / f"{kind}.csv")
        part.to_csv(inputs[-1], index=False)
    csv, md = write_simulations_table(inputs, tmp_path / "tables" / "simulations.csv", load_config(preset="smoke"))
    assert len(pd.read_csv(csv)) == 3
    text = md.read_text()
    assert "Reweighted metadynamics against unbiased MD" in text and "NUTS against unbiased MD" in text
    assert "0.600 ± 0.030" in text and "never visited by nuts" in text
