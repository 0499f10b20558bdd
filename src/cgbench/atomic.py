"""Atomic file writes: to a temporary file next to the target, then ``os.replace``.

A job killed mid-write leaves the previous file (or none), never a truncated one, so every
checkpoint and output of the workflow is either whole or absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary binary file, then move it to ``path``."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON at ``path``."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def atomic_savez(path: str | Path, **arrays) -> None:
    """``np.savez(path, **arrays)``, atomically (``path`` should end in ``.npz``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
