"""Configuration: the shipped config is valid in every preset; bad configs are named and rejected."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cgbench.config import DEFAULT_CONFIG, ConfigError, config_hash, deep_merge, load_config, resolve

RAW = yaml.safe_load(DEFAULT_CONFIG.read_text())


def _set(path, value):
    def mutate(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_shipped_presets_are_valid(preset):
    config = load_config(preset=preset)
    assert config["preset"] == preset
    assert "presets" not in config


def test_presets_change_only_numbers():
    """Overlays replace numbers (or leave blocks alone), never strings, lists or structure — but for
    the choices forced by scale: the cpu preset's PMFs learn OBC2, whose MD converges on 2 cores
    (explicit water at 40 ns/day does not), and leave out all_atom (hours of force matching); the
    smoke preset leaves out heavy_atom (the code of core_beta; 6 jobs fewer keep CI under 30 min) and
    trains one CG-BG representation per job (the other is covered by tests/test_cgbg*.py) and scores
    the data-free peptide model at β = 1 only (whose reference is peptide_nuts: no extra NUTS job)."""
    allowed = {("cpu", ("pmf", "environment")): "obc2",
               ("cpu", ("pmf", "resolutions")): ["core_beta", "heavy_atom"],
               ("smoke", ("pmf", "resolutions")): ["core_beta", "all_atom"],
               ("smoke", ("cgbg", "representations")): ["internal"],
               ("smoke", ("ecg_peptides", "scored_betas")): [1.0]}
    def leaves(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, prefix + (k,))
        else:
            yield prefix, node

    for name, overlay in RAW["presets"].items():
        for path, value in leaves(overlay):
            if allowed.get((name, path)) == value:
                continue
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, path, value)


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (_set(["ecg", "double_well", "tempering", "updates_per_stpe"], 5), "ecg.double_well.tempering.updates_per_stpe"),
        (_set(["synthetic", "targets"], ["double_well", "duble_well"]), "synthetic.targets[1]"),
        (_set(["ecg", "gmm_2d", "tempering", "updates_per_step"], -5), "ecg.gmm_2d.tempering.updates_per_step"),
        (_set(["nuts", "chains"], "four"), "nuts.chains"),
        (_set(["evaluation", "bins"], 2.5), "evaluation.bins"),
        (_set(["ecg", "double_well", "conditional_sampler", "kind"], "langevin"), "ecg.double_well.conditional_sampler.kind"),
        (_set(["device"], "tpu"), "device"),
        (_set(["sed"], 1), "sed"),
        (_set(["presets", "cpu", "nuts", "chans"], 3), "nuts.chans"),
        (_set(["preset"], "laptop"), "preset"),
        (_set(["ecg", "gmm_10d", "tempering", "beta_0"], 2.0), "ecg.gmm_10d.tempering.beta_0"),
        (_set(["peptides", "kx"], {"sequence": "KXB"}), "peptides.kx.sequence: 'KXB' has unknown residue letter(s) B, X"),
        (_set(["pmf", "epochs_by_resolution"], {"core_bta": 30}),
         "pmf.epochs_by_resolution: 'core_bta' is not one of"),
        (_set(["pmf", "epochs_by_resolution"], {"core_beta": 0}), "pmf.epochs_by_resolution.core_beta"),
        (_set(["md", "runs", "obc3_unbiased"], {"replicas": 1, "steps": 10}), "md.runs.obc3_unbiased"),
        (_set(["md", "runs", "obc2_metad", "steps"], -1), "md.runs.obc2_metad.steps"),
        (_set(["md", "chunk_steps"], 1500), "md.chunk_steps: 1500 is not a multiple of md.report_interval"),
        (_set(["md", "metadynamics", "residue"], 1), "md.metadynamics.residue: 1 is past the last residue of peptides.ala2"),
        (_set(["md", "metadynamics", "bias_factor"], 1.0), "md.metadynamics.bias_factor"),
        (_set(["md", "runs", "obc1_unbiased", "steps"], 1234), "md.runs.obc1_unbiased.steps: 1234 is not a multiple"),
        (_set(["peptide_defaults", "md_steps_scale"], -1), "peptide_defaults.md_steps_scale"),
        (_set(["peptide_nuts", "solvent"], "explicit"), "peptide_nuts.solvent"),
        (_set(["peptides", "ala2", "sequence"], ""), "peptides.ala2.sequence: empty sequence"),
        (_set(["peptides", "ala 2"], {"sequence": "A"}), "peptides.ala 2: invalid name"),
        (_set(["peptides", "ala2", "temprature"], 300.0), "peptides.ala2.temprature: unknown key"),
        (_set(["peptides", "ala2", "implicit_solvents"], ["obc3"]), "peptides.ala2.implicit_solvents[0]"),
        (_set(["peptide_defaults", "temperature"], -1.0), "peptide_defaults.temperature"),
        (_set(["peptide_defaults", "force_field"], "amber15-all.xml"),
         "peptide_defaults.force_field: OpenMM cannot load force-field file 'amber15-all.xml'"),
        (_set(["peptides", "ala2", "water_model"], "amber14/tip9p.xml"), "peptides.ala2.water_model"),
        (_set(["ecg_peptides", "targets"], ["ala9"]), "ecg_peptides.targets[0]: 'ala9' is not a key of peptides"),
        (_set(["ecg_peptides", "scored_betas"], [0.5, 2.0]), "ecg_peptides.scored_betas[1]: 2.0 lies outside"),
        (_set(["ecg_peptides", "potentials"], ["obc3"]), "ecg_peptides.potentials[0]"),
        (_set(["ecg_peptides", "conditional_sampler", "kind"], "mala"), "ecg_peptides.conditional_sampler.kind"),
        (_set(["ecg_peptides", "potentials"], ["obc2", "pmf_heavy_atom"]),   # smoke has no heavy-atom PMF
         "ecg_peptides.potentials: pmf_heavy_atom needs the heavy-atom PMF_B"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(mutate, named):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(ConfigError) as error:
        resolve(raw)
    assert named in str(error.value)


def test_peptide_settings_are_defaults_overlaid_by_the_entry():
    from cgbench.peptides import peptide_from_config

    raw = copy.deepcopy(RAW)
    raw["peptides"]["kgp"] = {"sequence": "KGP", "temperature": 310.0, "implicit_solvents": ["obc2"]}
    config = resolve(raw)
    kgp, ala2 = peptide_from_config("kgp", config), peptide_from_config("ala2", config)
    assert (kgp.sequence, kgp.temperature, kgp.implicit_solvents) == ("KGP", 310.0, ("obc2",))
    assert kgp.force_field == ala2.force_field == RAW["peptide_defaults"]["force_field"]
    assert ala2.temperature == RAW["peptide_defaults"]["temperature"]
    assert ala2.residue_names == ["ACE", "ALA", "NME"]


def test_preset_overlay_is_merged_and_hash_changes():
    smoke, cpu = load_config(preset="smoke"), load_config(preset="cpu")
    assert smoke["ecg"]["double_well"]["flow"]["layers"] == RAW["presets"]["smoke"]["ecg"]["double_well"]["flow"]["layers"]
    assert smoke["ecg"]["double_well"]["flow"]["knots"] == RAW["ecg"]["double_well"]["flow"]["knots"]
    assert config_hash(smoke) != config_hash(cpu)
    assert config_hash(smoke) == config_hash(load_config(preset="smoke"))


def test_resolved_config_round_trips():
    config = load_config()
    assert resolve(copy.deepcopy(config)) == config


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 3}})
    assert merged == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (_set(["ecg", "double_well", "tempering", "updates_per_stpe"], 5), "ecg.double_well.tempering.updates_per_stpe"),
        (_set(["peptides", "ala2", "sequence"], "AJ"), "peptides.ala2.sequence: 'AJ' has unknown residue letter(s) J"),
    ],
)
def test_snakemake_stops_before_any_job(tmp_path, mutate, named):
    """A misspelled key or bad sequence stops the workflow at start, named; nothing is written."""
    raw = copy.deepcopy(RAW)
    mutate(raw)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    snakefile = Path(__file__).resolve().parents[1] / "Snakefile"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(tmp_path),
         "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_preset_entries_of_removed_peptides_are_ignored():
    """The presets tune ala3 and ala6 (md_steps_scale); a config without them stays valid."""
    raw = copy.deepcopy(RAW)
    raw["peptides"] = {"kgp": {"sequence": "KGP"}}
    raw["ecg_peptides"]["targets"] = ["kgp"]   # a target must be a configured peptide (named if not)
    assert "ala3" in raw["presets"]["cpu"]["peptides"]
    for preset in ("smoke", "cpu", "paper"):
        config = resolve({**raw, "preset": preset})
        assert list(config["peptides"]) == ["kgp"]
        assert config["peptides"]["kgp"] == {"sequence": "KGP"}
    assert resolve({**RAW, "preset": "cpu"})["peptides"]["ala3"]["md_steps_scale"] == 0
