"""Write ``ala2_reference_backbone.npz``: backbone states of alanine dipeptide at equilibrium.

The fixture of ``tests/test_peptide_ecg.py::test_training_score_obeys_steins_identity``: the 7
backbone heavy atoms (CH3, C, N, CA, C, N, CH3; nm) of 1 000 states evenly strided over the
all-atom NUTS samples of ala2 in OBC2 at 300 K that the workflow writes at the cpu preset
(``results/peptides/ala2/nuts/samples.npz``: 2 chains x 5 000 samples, thin 4). Only the
backbone is kept: it alone fixes z, and it keeps the file small (~80 kB).

    python tests/data/make_ala2_reference_backbone.py results/peptides/ala2/nuts/samples.npz
"""

import json
import sys
from pathlib import Path

import numpy as np

from cgbench.peptides import Peptide, build_peptide
from cgbench.peptide_ecg import slow_fast_split

STATES = 1000


def main(samples_path: str) -> None:
    samples = np.load(samples_path)
    topology, _ = build_peptide(Peptide("ala2", "A"))
    split = slow_fast_split(topology, "all_atom")
    atoms = np.asarray(split.representation.atom_indices)[np.asarray(split.z_beads)]
    positions = samples["positions"]
    rows = np.linspace(0, len(positions) - 1, STATES).round().astype(int)
    provenance = json.loads(Path(samples_path + ".provenance.json").read_text())
    out = Path(__file__).with_name("ala2_reference_backbone.npz")
    np.savez_compressed(out, backbone=positions[rows][:, atoms].astype(np.float32),
                        temperature=samples["temperature"], solvent="obc2",
                        provenance=json.dumps({k: provenance[k] for k in ("config_hash", "preset", "seed", "created")}))
    print(f"wrote {out} ({out.stat().st_size} bytes): {STATES} states of atoms {atoms.tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
