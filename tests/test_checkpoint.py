"""Checkpoints commit arrays and state together: a kill between the two writes loses nothing."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from cgbench import checkpoint
from cgbench.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint


def tree(value):
    return {"w": jnp.full((3,), value, jnp.float32), "step": jnp.asarray(int(value))}


def test_round_trip_and_one_arrays_file(tmp_path):
    for u in range(3):
        save_checkpoint(tmp_path, tree(u), {"update": u, "run": "a"})
    loaded, state = load_checkpoint(tmp_path, tree(0), identity={"run": "a"})
    assert state["update"] == 2 and int(loaded["step"]) == 2
    np.testing.assert_array_equal(loaded["w"], np.full(3, 2.0))
    assert len(list(tmp_path.glob("checkpoint-*.eqx"))) == 1


def test_kill_between_arrays_and_state_keeps_the_previous_pair(tmp_path, monkeypatch):
    """The failure this module exists for: arrays of update 2 written, the state of update 2 not.
    The old fixed-name layout then paired update-2 arrays with update-1 state."""
    save_checkpoint(tmp_path, tree(1), {"update": 1})

    def killed(path, obj):
        raise KeyboardInterrupt("simulated SIGKILL after the arrays were written")

    monkeypatch.setattr(checkpoint, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, tree(2), {"update": 2})
    monkeypatch.undo()
    loaded, state = load_checkpoint(tmp_path, tree(0), identity={})
    assert state["update"] == 1 and int(loaded["step"]) == 1     # a matching pair, not a mix
    save_checkpoint(tmp_path, tree(2), {"update": 2})              # the resumed run commits again
    loaded, state = load_checkpoint(tmp_path, tree(0), identity={})
    assert state["update"] == 2 and int(loaded["step"]) == 2
    assert len(list(tmp_path.glob("checkpoint-*.eqx"))) == 1


@pytest.mark.parametrize("case", ["absent", "other run", "names no file"])
def test_nothing_to_resume(tmp_path, case):
    if case != "absent":
        save_checkpoint(tmp_path, tree(1), {"run": "a"})
    if case == "names no file":
        state = json.loads((tmp_path / "checkpoint.json").read_text())
        (tmp_path / state["leaves"]).unlink()
    assert load_checkpoint(tmp_path, tree(0), identity={"run": "b" if case == "other run" else "a"}) is None


def test_remove(tmp_path):
    save_checkpoint(tmp_path, tree(1), {})
    remove_checkpoint(tmp_path)
    assert list(tmp_path.iterdir()) == []
