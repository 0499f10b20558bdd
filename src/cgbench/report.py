"""Which files each stage shows in the Snakemake report — importable without JAX.

The rules declare every figure as an output (``report(...)`` with a caption from ``report/``),
so the file names must be known when the workflow is parsed, before anything is drawn.
:func:`synthetic_figure_kinds` is that list for the synthetic targets, and
:func:`cgbench.figures.synthetic_figures` draws exactly these, so the two cannot drift apart.
"""

from __future__ import annotations


def synthetic_figure_kinds(name: str, spec: dict, with_models: bool = True) -> list[str]:
    """The ``<what>`` of every ``{name}_<what>.png`` drawn for a synthetic target.

    Args:
        name: key of ``targets:`` in the config (``double_well``, ``gmm_2d``, ``gmm_10d``, …).
        spec: that key's block (a Gaussian mixture's ``dim_z`` picks its figure).
        with_models: whether any ECG run of the target is configured; without one only the
            marginals (NUTS against exact) are drawn.
    """
    if name == "double_well":
        kinds = ["histograms", "tempering"]
    elif name.startswith("gmm"):
        kinds = {1: [], 2: ["samples"]}.get(spec["dim_z"], ["pairs"])
    else:
        raise ValueError(f"unknown synthetic target {name!r}")
    return (kinds if with_models else []) + ["marginals"]
