"""Resume checkpoints: a pytree of arrays and a JSON state, committed together.

A checkpoint is two files, and a job can be killed between writing them. If both had fixed names,
a kill after the arrays but before the state would pair the arrays of update u+1 with the state of
update u; the resumed run would redo update u+1 on top of itself and silently end elsewhere. So:

- the arrays go to a new file ``checkpoint-<n>.eqx`` (``eqx.tree_serialise_leaves``, written
  atomically);
- then ``checkpoint.json`` — the state plus ``"leaves": "checkpoint-<n>.eqx"`` — replaces the old
  one atomically. That write is the commit point;
- then the previous ``checkpoint-<m>.eqx`` is deleted.

A kill at any point leaves ``checkpoint.json`` naming a whole arrays file that matches it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import equinox as eqx

from cgbench.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

STATE = "checkpoint.json"
_LEAVES = re.compile(r"checkpoint-(\d+)\.eqx$")


def save_checkpoint(directory: str | Path, tree, state: dict) -> None:
    """Commit ``tree`` (a pytree of arrays) and ``state`` (JSON-serialisable) as the checkpoint."""
    directory = Path(directory)
    previous = [p for p in directory.glob("checkpoint-*.eqx") if _LEAVES.search(p.name)]
    n = 1 + max((int(_LEAVES.search(p.name).group(1)) for p in previous), default=-1)
    name = f"checkpoint-{n}.eqx"
    atomic_write_bytes(directory / name, lambda f: eqx.tree_serialise_leaves(f, tree))
    atomic_write_json(directory / STATE, {**state, "leaves": name})
    for p in previous:
        p.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path, like, *, identity: dict) -> tuple[object, dict] | None:
    """The committed checkpoint as ``(tree, state)``, or None where there is none to resume.

    Args:
        directory: Folder given to :func:`save_checkpoint`.
        like: A pytree of the same structure, shapes and dtypes as the saved one.
        identity: Entries the saved state must have, e.g. ``{"run_hash": ...}``; a checkpoint of
            other settings or data is ignored with a warning (and its arrays are not read).

    Returns:
        ``tree`` with the saved leaves and the state dict (with its ``"leaves"`` entry); None when
        ``checkpoint.json`` is missing, names no file, or does not match ``identity``.
    """
    directory = Path(directory)
    if not (directory / STATE).exists():
        return None
    state = json.loads((directory / STATE).read_text())
    leaves = directory / str(state.get("leaves", ""))
    if not _LEAVES.search(leaves.name) or not leaves.is_file():
        log.warning("checkpoint in %s names no arrays file; starting afresh", directory)
        return None
    if any(state.get(k) != v for k, v in identity.items()):
        log.warning("checkpoint in %s was made with other settings or data; starting afresh", directory)
        return None
    return eqx.tree_deserialise_leaves(leaves, like), state


def remove_checkpoint(directory: str | Path) -> None:
    """Delete the checkpoint files (after the final outputs are written)."""
    directory = Path(directory)
    (directory / STATE).unlink(missing_ok=True)
    for p in directory.glob("checkpoint-*.eqx"):
        p.unlink(missing_ok=True)
