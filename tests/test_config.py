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
    """Overlays replace numbers (or leave blocks alone), never strings, lists or structure."""
    def leaves(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, prefix + (k,))
        else:
            yield prefix, node

    for name, overlay in RAW["presets"].items():
        for path, value in leaves(overlay):
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
    ],
)
def test_bad_config_is_rejected_naming_the_key(mutate, named):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(ConfigError) as error:
        resolve(raw)
    assert named in str(error.value)


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


def test_snakemake_stops_before_any_job(tmp_path):
    """A misspelled key stops the workflow at start, naming the key; nothing is written."""
    raw = copy.deepcopy(RAW)
    raw["ecg"]["double_well"]["tempering"]["updates_per_stpe"] = 5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    snakefile = Path(__file__).resolve().parents[1] / "Snakefile"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(tmp_path),
         "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ecg.double_well.tempering.updates_per_stpe" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
