"""cgbench: a workflow-managed benchmark suite for coarse-grained Boltzmann sampling.

The science lives in this package; the Snakemake rules in ``rules/`` are thin calls into
:mod:`cgbench.cli`. Every stage can be run and tested without Snakemake.
"""

__version__ = "0.1.0"
