"""Configuration: load ``config.yaml``, merge the chosen preset, validate against the schema.

Validation happens before any job runs (``rules/common.smk`` calls :func:`resolve`); a bad key,
value, type or target name raises :class:`ConfigError` with a message naming the key, e.g.
``ecg.double_well.tempering.updates_per_step: -5 is less than the minimum of 1``. Every
preset is checked, not only the chosen one, so a typo in ``cpu`` is caught by a ``smoke`` run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


_RESIDUE_LETTERS = "ACDEFGHIKLMNPQRSTVWY"


class ConfigError(ValueError):
    """An invalid configuration; the message names every offending key."""


def deep_merge(base: dict, overlay: dict) -> dict:
    """Copy of ``base`` with ``overlay`` merged in, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "<top level>"


def _messages(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = _key_path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            patterns = error.schema.get("patternProperties", {})
            for key in error.instance:
                if key not in allowed and not any(re.search(p, key) for p in patterns):
                    name = f"{where}.{key}" if where != "<top level>" else key
                    if allowed:
                        out.append(f"{name}: unknown key (allowed here: {', '.join(sorted(allowed))})")
                    else:
                        out.append(f"{name}: invalid name (names must match {' or '.join(patterns)})")
        elif error.validator == "pattern" and where.endswith(".sequence") and isinstance(error.instance, str):
            bad = sorted({c for c in error.instance if c not in _RESIDUE_LETTERS})
            what = (f"{error.instance!r} has unknown residue letter(s) {', '.join(bad)}" if bad
                    else "empty sequence")
            out.append(f"{where}: {what} "
                       f"(one-letter codes of the 20 standard amino acids: {_RESIDUE_LETTERS})")
        else:
            out.append(f"{where}: {error.message}")
    return out


def _semantic_messages(config: dict) -> list[str]:
    out = []
    known = sorted(config["targets"])
    for field in ("targets", "no_tempering_ablation"):
        for i, name in enumerate(config["synthetic"][field]):
            if name not in config["targets"]:
                out.append(f"synthetic.{field}[{i}]: unknown target {name!r} (defined under targets: "
                           f"{', '.join(known)})")
            elif name not in config["ecg"]:
                out.append(f"synthetic.{field}[{i}]: target {name!r} has no ecg.{name} block")
    out += _force_field_messages(config)
    md = config["md"]
    if md["chunk_steps"] % md["report_interval"]:
        out.append(f"md.chunk_steps: {md['chunk_steps']} is not a multiple of md.report_interval "
                   f"{md['report_interval']}")
    for run, spec in md["runs"].items():
        if spec["steps"] % md["report_interval"]:
            out.append(f"md.runs.{run}.steps: {spec['steps']} is not a multiple of md.report_interval "
                       f"{md['report_interval']}")
    residue = md["metadynamics"]["residue"]
    for name, entry in config["peptides"].items():
        if residue >= len(entry["sequence"]):
            out.append(f"md.metadynamics.residue: {residue} is past the last residue of peptides.{name} "
                       f"({entry['sequence']!r}; 0 is the first)")
    pmf = config["pmf"]
    if pmf["data"] and pmf["resolutions"]:
        needed = [f"{pmf['environment']}_unbiased"] + ([f"{pmf['environment']}_metad"] if "biased" in pmf["data"] else [])
        for run in needed:
            if md["runs"][run]["steps"] == 0 or md["runs"][run]["replicas"] == 0:
                out.append(f"pmf.environment: {pmf['environment']!r} needs md.runs.{run} (PMF data or reference), "
                           "which has no steps or replicas")
    cg_md = pmf["cg_md"]
    if cg_md["steps"] % cg_md["report_interval"]:
        out.append(f"pmf.cg_md.steps: {cg_md['steps']} is not a multiple of pmf.cg_md.report_interval "
                   f"{cg_md['report_interval']}")
    for name, block in config["ecg"].items():
        t = block["tempering"]
        if t["beta_0"] > t["beta_target"]:
            out.append(f"ecg.{name}.tempering.beta_0: {t['beta_0']} exceeds beta_target {t['beta_target']}")
    out += _ecg_peptide_messages(config)
    return out


def _ecg_peptide_messages(config: dict) -> list[str]:
    """The ``ecg_peptides`` block against the rest: its targets, scored β and the PMF it may need."""
    spec, out = config["ecg_peptides"], []
    for i, name in enumerate(spec["targets"]):
        if name not in config["peptides"]:
            out.append(f"ecg_peptides.targets[{i}]: {name!r} is not a key of peptides: "
                       f"({', '.join(config['peptides']) or 'none configured'})")
    t = spec["tempering"]
    if t["beta_0"] > t["beta_target"]:
        out.append(f"ecg_peptides.tempering.beta_0: {t['beta_0']} exceeds beta_target {t['beta_target']}")
    for i, beta in enumerate(spec["scored_betas"]):
        if not t["beta_0"] <= beta <= t["beta_target"]:
            out.append(f"ecg_peptides.scored_betas[{i}]: {beta} lies outside [beta_0, beta_target] = "
                       f"[{t['beta_0']}, {t['beta_target']}]")
    if spec["targets"] and "pmf_heavy_atom" in spec["potentials"]:
        pmf = config["pmf"]
        if "heavy_atom" not in pmf["resolutions"] or "biased" not in pmf["data"]:
            out.append("ecg_peptides.potentials: pmf_heavy_atom needs the heavy-atom PMF_B "
                       "(pmf.resolutions with heavy_atom and pmf.data with biased)")
    return out


def _force_field_messages(config: dict) -> list[str]:
    """Force-field files that OpenMM cannot load, named by key (checked only if used)."""
    files = {}
    for key in ("force_field", "water_model"):
        files.setdefault(config["peptide_defaults"][key], f"peptide_defaults.{key}")
        for name, entry in config["peptides"].items():
            if key in entry:
                files.setdefault(entry[key], f"peptides.{name}.{key}")
    if not config["peptides"]:
        return []
    out = []
    for file, where in files.items():
        problem = _force_field_problem(file)
        if problem:
            out.append(f"{where}: OpenMM cannot load force-field file {file!r} ({problem})")
    return out


@functools.cache
def _force_field_problem(file: str) -> str | None:
    import openmm.app as app

    try:
        app.ForceField(file)
    except Exception as error:  # OpenMM raises ValueError/OSError for a missing or bad file
        return str(error)
    return None


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def resolve(raw: dict, schema: dict | None = None) -> dict:
    """Merge ``raw['presets'][raw['preset']]`` into ``raw`` and validate; return the result.

    Every preset is merged and validated so that errors in any of them are reported. A config
    without ``presets`` is taken as already resolved (as written by :func:`write_resolved`).

    Raises:
        ConfigError: listing every invalid key, prefixed by the preset it came from.
    """
    schema = load_schema() if schema is None else schema
    if not isinstance(raw, dict):
        raise ConfigError("configuration must be a mapping")
    base = {k: v for k, v in raw.items() if k != "presets"}
    presets = raw.get("presets", {})
    if not isinstance(presets, dict):
        raise ConfigError("presets: must be a mapping of preset name to overrides")
    chosen = raw.get("preset")
    if presets and chosen not in presets:
        raise ConfigError(f"preset: unknown preset {chosen!r} (defined: {', '.join(presets)})")
    resolved = None
    errors: dict[str, list[str]] = {}  # message -> presets it occurs in
    for name, overlay in (presets.items() if presets else [(chosen, {})]):
        if not isinstance(overlay, dict):
            errors.setdefault(f"presets.{name}: must be a mapping of overrides", []).append(name)
            continue
        merged = deep_merge(base, _configured_peptides_only(overlay, base))
        merged["preset"] = name
        messages = _messages(merged, schema) or _semantic_messages(merged)
        for message in messages:
            errors.setdefault(message, []).append(name)
        if name == chosen:
            resolved = merged
    if errors:
        lines = [m + (f"  [preset: {', '.join(map(str, p))}]" if presets else "") for m, p in errors.items()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return resolved


def _configured_peptides_only(overlay: dict, base: dict) -> dict:
    """A preset's ``peptides:`` entries tune peptides that are configured; an entry for one that is
    not (removed from ``peptides:``) is dropped, so removing a peptide needs no preset edit."""
    if not isinstance(overlay.get("peptides"), dict) or not isinstance(base.get("peptides"), dict):
        return overlay
    return {**overlay, "peptides": {k: v for k, v in overlay["peptides"].items() if k in base["peptides"]}}


def load_config(path: str | Path = DEFAULT_CONFIG, *, preset: str | None = None) -> dict:
    """Read a YAML config, optionally switch preset, and :func:`resolve` it."""
    raw = yaml.safe_load(Path(path).read_text())
    if preset is not None:
        raw["preset"] = preset
    return resolve(raw)


def config_hash(config: dict) -> str:
    """12-hex-digit SHA-256 of the resolved config (canonical JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def write_resolved(config: dict, folder: str | Path) -> Path:
    """Write the resolved config as ``<folder>/config-<hash>.yaml`` (once) and return its path."""
    path = Path(folder) / f"config-{config_hash(config)}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(path)
    return path
