"""Provenance records: what made a result (config hash, seed, package versions, platform).

Every table and figure gets a JSON sidecar from :func:`write_sidecar`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from cgbench.config import config_hash

PACKAGES = ("cgbench", "jax", "jaxlib", "flowjax", "equinox", "optax", "blackjax", "numpy", "scipy",
            "pandas", "matplotlib", "seaborn", "snakemake", "openmm", "mdtraj")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def platform_info() -> dict:
    import jax

    return {
        "python": sys.version.split()[0],
        "system": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
    }


def record(config: dict, *, seed: int, **extra) -> dict:
    """Provenance of one artefact: config hash and preset, seed, versions, platform, time."""
    return {
        "config_hash": config_hash(config),
        "preset": config.get("preset"),
        "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "platform": platform_info(),
        **extra,
    }


def write_sidecar(artefact: str | Path, config: dict, *, seed: int, **extra) -> Path:
    """Write ``<artefact>.provenance.json`` next to ``artefact`` and return its path."""
    path = Path(str(artefact) + ".provenance.json")
    path.write_text(json.dumps(record(config, seed=seed, **extra), indent=1))
    return path
