"""Command line: one subcommand per workflow stage, so every stage runs without Snakemake.

    cgbench validate   [--config config.yaml] [--preset smoke]
    cgbench nuts       --target double_well --out results/double_well/nuts/samples.npz
    cgbench ecg-train  --target double_well --schedule fixed --out results/double_well/ecg/ecg
    cgbench evaluate   --target double_well --models ecg=DIR ... --nuts FILE --out FILE.csv
    cgbench tables     --inputs A.csv B.csv ... --out-dir results/tables
    cgbench figures    --target double_well --models ecg=DIR ... --nuts FILE --out-dir results/figures
    cgbench build-peptide  --peptide ala2 --out results/peptides/ala2/structure.pdb
    cgbench peptide-system --peptide ala2 --solvent obc2 --structure FILE.pdb --out FILE.xml
    cgbench md         --peptide ala2 --run obc2_metad --replica 0 --structure FILE.pdb --system FILE.xml --out DIR
    cgbench cg-dataset --peptide ala2 --run obc2_metad --resolution core_beta --replicas DIR ... --out FILE.npz
    cgbench simulations --peptide ala2 --run obc2_metad --dataset FILE.npz --replicas DIR ... --out FILE.csv --figure FILE.png
    cgbench peptide-nuts --peptide ala2 --structure FILE.pdb --system FILE.xml --out FILE.npz
    cgbench ecg-peptide-train --peptide ala2 --potential obc2 --structure FILE.pdb --system FILE.xml --out DIR
    cgbench ecg-peptide-reference --peptide ala2 --beta 0.3 --structure FILE.pdb --system FILE.xml --out FILE.npz
    cgbench ecg-peptide-evaluate --peptide ala2 --potential obc2 --structure F.pdb --system F.xml --models DIR --reference 1.0=F.npz ... --out F.csv --out-dir DIR
    cgbench ecg-peptide-report --inputs F.csv ... --out-dir results/tables --figures-dir results/figures
    cgbench muller-brown-data --data biased --out results/muller_brown/data/biased.npz
    cgbench pmf-train  --system ala2 --resolution core_beta --data biased --dataset FILE.npz --structure FILE.pdb --out DIR
    cgbench pmf-validate --system ala2 --resolution core_beta --data biased --model DIR/model.eqx --start FILE.npz --reference FILE.npz --structure FILE.pdb --out DIR
    cgbench pmf-table  --inputs DIR ... --out results/tables/pmf.csv
    cgbench pmf-figure --system ala2 --runs core_beta:biased=cg_md.npz ... --reference FILE.npz --out FILE.png
    cgbench cgbg       --system ala2 --resolution core_beta --data biased --dataset FILE.npz --pmfs biased=M.eqx unbiased=M.eqx --reference FILE.npz --structure FILE.pdb --out DIR
    cgbench cgbg-tables --inputs DIR ... --pmfs DIR ... --baselines ala2:obc2=FILE.npz ... --references ala2=FILE.npz --md ala2=PROVENANCE.json ... --out results/tables
    cgbench cgbg-figure --system ala2 --inputs DIR ... --reference FILE.npz --out FILE.png   (or --accuracy CSV --timing CSV)
    cgbench parity     --sequence KGP --solvent obc2 --samples 100   (JAX energy vs OpenMM; JSON)
    cgbench jobs       --root results/benchmarks --inputs A.tsv ... --out results/tables/jobs.csv
    cgbench bench      [--fail-above 25] [--tag TAG] [--no-save] [-- PYTEST-ARGS]

``--config`` takes ``config.yaml`` (resolved with its preset, or ``--preset``) or a resolved
config written by the workflow. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cgbench.config import DEFAULT_CONFIG, ConfigError, config_hash, load_config
from cgbench.md import RUNS as MD_RUNS

log = logging.getLogger("cgbench")


def _select_device(config: dict) -> None:
    """Thin switch: pin JAX to the configured platform before any computation."""
    import jax

    jax.config.update("jax_platforms", "cuda,cpu" if config["device"] == "gpu" else "cpu")
    if config["device"] == "gpu" and jax.default_backend() != "gpu":
        log.warning("device: gpu, but JAX found no GPU; running on %s. On GPU nodes install "
                    "envs/cgbench-gpu.yaml (JAX CUDA plugin, OpenMM CUDA platform).", jax.default_backend())


def _models_arg(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items or []:
        method, _, folder = item.partition("=")
        out[method] = Path(folder)
    return out


def cmd_validate(args, config):
    print(f"configuration valid: preset {config['preset']!r}, hash {config_hash(config)}")


def cmd_nuts(args, config):
    import jax.random as jr
    import numpy as np

    from cgbench.nuts import run_nuts
    from cgbench.provenance import write_sidecar
    from cgbench.targets import make_target

    target = make_target(args.target, config["targets"][args.target])
    beta = config["ecg"][args.target]["tempering"]["beta_target"]
    n = config["nuts"]
    log.info("NUTS on %s: %d chains x %d samples (warm-up %d)", args.target, n["chains"], n["samples"], n["warmup"])
    result = run_nuts(target, beta=beta, chains=n["chains"], warmup=n["warmup"], samples=n["samples"],
                      key=jr.fold_in(jr.key(config["seed"]), 1))  # stream 1: NUTS
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, z=result["z"], x=result["x"], chains=result["chains"], beta=beta)
    meta = {k: v for k, v in result.items() if k not in ("z", "x")}
    write_sidecar(out, config, seed=config["seed"], target=args.target, beta=beta, **meta)
    log.info("NUTS done in %.1f s: acceptance %.3f, %d divergences", meta["wall_s"], meta["acceptance"],
             meta["divergences"])


def cmd_ecg_train(args, config):
    from cgbench.ecg import train_ecg
    from cgbench.provenance import write_sidecar
    from cgbench.targets import make_target

    target = make_target(args.target, config["targets"][args.target])
    settings = config["ecg"][args.target]
    log.info("ECG training of %s, schedule %s", args.target, args.schedule)
    index = train_ecg(target, settings, args.schedule, args.out, seed=config["seed"],
                      progress=not args.no_progress)
    write_sidecar(Path(args.out) / "models.json", config, seed=config["seed"], target=args.target,
                  schedule=args.schedule, settings=settings,
                  wall_s=index["models"][-1]["wall_s"], updates=index["models"][-1]["updates"])


def cmd_evaluate(args, config):
    from cgbench.evaluate import evaluate_target
    from cgbench.provenance import write_sidecar
    from cgbench.targets import make_target

    target = make_target(args.target, config["targets"][args.target])
    table = evaluate_target(args.target, target, _models_arg(args.models), Path(args.nuts), config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    write_sidecar(out, config, seed=config["seed"], target=args.target)
    log.info("%d rows written to %s", len(table), out)


def cmd_tables(args, config):
    from cgbench.tables import write_synthetic_tables

    paths = write_synthetic_tables([Path(p) for p in args.inputs], Path(args.out_dir), config)
    for p in paths:
        log.info("wrote %s", p)


def cmd_figures(args, config):
    from cgbench.figures import synthetic_figures

    paths = synthetic_figures(args.target, _models_arg(args.models), Path(args.nuts), Path(args.out_dir), config)
    for p in paths:
        log.info("wrote %s", p)


def cmd_build_peptide(args, config):
    from cgbench.peptides import peptide_from_config, write_structure
    from cgbench.provenance import write_sidecar

    peptide = peptide_from_config(args.peptide, config)
    log.info("building %s: ACE-%s-NME", peptide.name, peptide.sequence)
    path = write_structure(peptide, args.out)
    write_sidecar(path, config, seed=config["seed"], peptide=peptide.to_dict())
    log.info("wrote %s", path)


def cmd_peptide_system(args, config):
    from cgbench.peptides import load_structure, pdb_text, peptide_from_config
    from cgbench.provenance import write_sidecar
    from cgbench.systems import create_system, save_system, solvate

    peptide = peptide_from_config(args.peptide, config)
    topology, positions = load_structure(args.structure)
    if args.solvent == "explicit":
        if not args.solvated:
            raise SystemExit("cgbench peptide-system: --solvated FILE.pdb is required for explicit solvent")
        topology, positions = solvate(topology, positions, peptide)
        Path(args.solvated).write_text(pdb_text(topology, positions))
        write_sidecar(args.solvated, config, seed=config["seed"], peptide=peptide.to_dict())
    system = create_system(topology, args.solvent, peptide)
    path = save_system(system, args.out)
    write_sidecar(path, config, seed=config["seed"], peptide=peptide.to_dict(), solvent=args.solvent,
                  atoms=system.getNumParticles(),
                  forces=[type(system.getForce(i)).__name__ for i in range(system.getNumForces())])
    log.info("wrote %s (%d atoms)", path, system.getNumParticles())


def _run_seed(config: dict, *parts) -> int:
    """A positive 31-bit seed derived from the master seed and names/numbers (OpenMM treats 0 as
    'pick one at random', so 0 is never returned)."""
    import zlib

    import numpy as np

    words = [config["seed"], *(zlib.crc32(str(p).encode()) for p in parts)]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1)) + 1


def cmd_md(args, config):
    from cgbench.md import (md_settings_from_config, metadynamics_from_config, run_environment, run_is_biased,
                            run_md, settings_record)
    from cgbench.peptides import load_structure, peptide_from_config
    from cgbench.provenance import write_sidecar
    from cgbench.systems import load_system, platform_name

    import openmm

    peptide = peptide_from_config(args.peptide, config)
    topology, positions = load_structure(args.structure)
    n_solute = load_structure(args.solute)[0].getNumAtoms() if args.solute else topology.getNumAtoms()
    system = load_system(args.system)
    settings = md_settings_from_config(config, args.run, peptide)
    metadynamics = metadynamics_from_config(config, topology) if run_is_biased(args.run) else None
    platform = platform_name(run_environment(args.run), config["device"])
    seed = _run_seed(config, args.peptide, args.run, args.replica)
    log.info("%s %s replica %d: %d steps of %g fs on %s (%d threads), seed %d", peptide.name, args.run,
             args.replica, settings.steps, settings.timestep, platform, args.threads, seed)
    summary = run_md(system, topology, positions, n_solute, settings, args.out, seed=seed, platform=platform,
                     threads=args.threads, metadynamics=metadynamics, progress=not args.no_progress)
    write_sidecar(Path(args.out) / "frames.npz", config, seed=seed, peptide=peptide.to_dict(), run=args.run,
                  replica=args.replica, openmm=openmm.__version__, platform_openmm=platform,
                  integrator="LangevinMiddleIntegrator", **settings_record(settings, metadynamics), **summary)


def cmd_cg_dataset(args, config):
    from cgbench.datasets import build_dataset, write_dataset
    from cgbench.provenance import write_sidecar
    from cgbench.peptides import peptide_from_config

    peptide = peptide_from_config(args.peptide, config)
    if len(args.out) != len(args.resolutions):
        raise SystemExit("cgbench cg-dataset: give one --out file per --resolutions entry")
    for resolution, out in zip(args.resolutions, args.out):
        data = build_dataset(args.replicas, resolution, temperature=peptide.temperature,
                             constraints=peptide.constraints, discard=config["md"]["reweighting_discard"],
                             run=args.run, peptide=peptide.name)
        path = write_dataset(data, out)
        write_sidecar(path, config, seed=config["seed"], peptide=peptide.to_dict(), run=args.run,
                      resolution=resolution, frames=len(data["positions"]), beads=data["positions"].shape[1],
                      replicas=[str(r) for r in args.replicas])
        log.info("wrote %s: %d frames x %d beads", path, *data["positions"].shape[:2])


def cmd_simulations(args, config):
    from cgbench.simulations import run_diagnostics

    run_diagnostics(args.peptide, args.run, Path(args.dataset), [Path(r) for r in args.replicas],
                    Path(args.out), Path(args.figure), config)


def cmd_simulations_table(args, config):
    from cgbench.simulations import write_simulations_table

    for p in write_simulations_table([Path(i) for i in args.inputs], Path(args.out), config):
        log.info("wrote %s", p)


def cmd_peptide_nuts(args, config):
    import jax.random as jr
    import numpy as np

    from cgbench.peptide_nuts import SCALARS, run_peptide_nuts, write_peptide_nuts
    from cgbench.peptides import load_structure, peptide_from_config
    from cgbench.provenance import write_sidecar
    from cgbench.systems import load_system

    from cgbench.resolutions import cg_mapping, map_positions, phi_psi

    peptide = peptide_from_config(args.peptide, config)
    spec = config["peptide_nuts"]
    topology, positions = load_structure(args.structure)
    seed = _run_seed(config, args.peptide, "nuts", spec["solvent"])
    log.info("NUTS of %s in %s: %d chains x %d samples (thin %d), tree depth <= %d, seed %d", peptide.name,
             spec["solvent"], spec["chains"], spec["samples"], spec["thin"], spec["max_tree_depth"], seed)
    result = run_peptide_nuts(load_system(args.system), positions, temperature=peptide.temperature,
                              chains=spec["chains"], warmup=spec["warmup"], samples=spec["samples"],
                              thin=spec["thin"], key=jr.key(seed), max_num_doublings=spec["max_tree_depth"])
    mapping = cg_mapping(topology, "all_atom")
    result["phi"], result["psi"] = (np.asarray(a) for a in phi_psi(map_positions(result["positions"], mapping),
                                                                   mapping))
    path = write_peptide_nuts(result, args.out)
    scalars = {k: np.asarray(result[k]).item() for k in SCALARS}
    write_sidecar(path, config, seed=seed, peptide=peptide.to_dict(), solvent=spec["solvent"], **scalars)
    log.info("wrote %s", path)


def _peptide_target(args, config):
    """(peptide, spec, target, all-atom positions of the structure) of the ecg-peptide-* commands."""
    from cgbench.peptide_ecg import build_target
    from cgbench.peptides import load_structure, peptide_from_config
    from cgbench.systems import load_system

    peptide = peptide_from_config(args.peptide, config)
    spec = config["ecg_peptides"]
    topology, positions = load_structure(args.structure)
    pmf = None
    if args.pmf:
        from cgbench.pmf import load_pmf

        pmf = load_pmf(args.pmf)[0]
    target = build_target(args.potential, topology, positions, load_system(args.system),
                          temperature=peptide.temperature, spec=spec, pmf=pmf)
    return peptide, spec, target, positions


def cmd_ecg_peptide_train(args, config):
    from cgbench.peptide_ecg import train_peptide

    peptide, spec, target, _ = _peptide_target(args, config)
    seed = _run_seed(config, args.peptide, "ecg", args.potential)
    log.info("data-free ECG of %s on %s (%s schedule): dim z %d, dim x %d, kT %.4f kJ/mol, seed %d",
             peptide.name, args.potential, spec["schedule"], target.dim_z, target.dim_x, target.kT, seed)
    index = train_peptide(target, spec, spec["schedule"], args.out, seed=seed, progress=not args.no_progress)
    log.info("saved %d models in %s", len(index["models"]), args.out)


def cmd_ecg_peptide_reference(args, config):
    import jax.random as jr
    import numpy as np

    from cgbench.peptide_ecg import run_reference
    from cgbench.peptide_nuts import SCALARS, write_peptide_nuts
    from cgbench.peptides import load_structure, peptide_from_config
    from cgbench.provenance import write_sidecar
    from cgbench.systems import load_system

    peptide = peptide_from_config(args.peptide, config)
    spec = config["ecg_peptides"]["reference"]
    _, positions = load_structure(args.structure)
    seed = _run_seed(config, args.peptide, "ecg-reference", args.beta)
    log.info("NUTS reference of %s at beta %g (%.1f K): %d chains x %d samples", peptide.name, args.beta,
             peptide.temperature / args.beta, spec["chains"], spec["samples"])
    result = run_reference(load_system(args.system), positions, temperature=peptide.temperature, beta=args.beta,
                           spec=spec, key=jr.key(seed))
    path = write_peptide_nuts(result, args.out)
    write_sidecar(path, config, seed=seed, peptide=peptide.to_dict(), beta=args.beta,
                  **{k: np.asarray(result[k]).item() for k in SCALARS})


def cmd_ecg_peptide_evaluate(args, config):
    import numpy as np

    from cgbench.config import config_hash
    from cgbench.peptide_ecg import evaluate_models
    from cgbench.peptide_nuts import load_peptide_nuts
    from cgbench.provenance import write_sidecar

    peptide, spec, target, positions = _peptide_target(args, config)
    atoms = np.asarray(target.split.representation.atom_indices)
    references = {}
    for item in args.reference:
        beta, _, path = item.partition("=")
        references[float(beta)] = load_peptide_nuts(path)["positions"][:, atoms]
    seed = _run_seed(config, args.peptide, "ecg-evaluate", args.potential)
    ev = spec["evaluation"]
    log.info("scoring models at beta %s: %d samples each, reconstructed", sorted(references), ev["samples"])
    table = evaluate_models(target, args.models, references, structure=positions[atoms], samples=ev["samples"],
                            bins=ev["bins"], bootstrap=ev["bootstrap"], seed=seed, out_dir=args.out_dir)
    table.insert(0, "potential", args.potential)
    table.insert(0, "target", args.peptide)
    table["schedule"] = spec["schedule"]
    table["config_hash"] = config_hash(config)
    table["preset"] = config["preset"]
    table["seed"] = seed
    table["device"] = config["device"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    write_sidecar(args.out, config, seed=seed, peptide=peptide.to_dict(), potential=args.potential)
    log.info("wrote %s (%d rows)", args.out, len(table))


def cmd_ecg_peptide_report(args, config):
    from cgbench.peptide_ecg_report import write_ecg_peptide_outputs

    for path in write_ecg_peptide_outputs(args.inputs, args.out_dir, args.figures_dir, config):
        log.info("wrote %s", path)


def _pmf_mapping(structure: str, resolution: str):
    from cgbench.peptides import load_structure
    from cgbench.resolutions import cg_mapping

    return cg_mapping(load_structure(structure)[0], resolution)


def cmd_muller_brown_data(args, config):
    import jax.random as jr

    from cgbench import muller_brown as mb
    from cgbench.provenance import write_sidecar

    spec = config["muller_brown"]
    seed = _run_seed(config, "muller_brown", args.data)
    biased = args.data == "biased"
    data = mb.generate_data(biased=biased, key=jr.key(seed), **spec["data"])
    mb.write_data(args.out, data)
    write_sidecar(args.out, config, seed=seed, data=args.data, total_frames=len(data["positions"]), **spec["data"])
    log.info("wrote %s: %d frames", args.out, len(data["positions"]))


def cmd_pmf_train(args, config):
    from cgbench.datasets import load_dataset
    from cgbench.pmf_training import replica_duration_ps, train_muller_brown_pmf, train_peptide_pmf
    from cgbench.peptides import peptide_from_config
    from cgbench.provenance import write_sidecar

    seed = _run_seed(config, args.system, "pmf", args.resolution or "x", args.data)
    if args.system == "muller_brown":
        from cgbench import muller_brown as mb

        summary = train_muller_brown_pmf(mb.load_data(args.dataset), spec=config["muller_brown"]["pmf"], seed=seed,
                                         out=args.out, progress=not args.no_progress)
        extra = {}
    else:
        peptide = peptide_from_config(args.system, config)
        dataset = load_dataset(args.dataset)
        max_time_ps = replica_duration_ps(load_dataset(args.cut_to)) if args.cut_to else None
        if max_time_ps is not None:
            log.info("unbiased data cut to the biased run's %.1f ps per replica", max_time_ps)
        summary = train_peptide_pmf(dataset, _pmf_mapping(args.structure, args.resolution), spec=config["pmf"],
                                    kT=dataset["kT"], seed=seed, out=args.out, max_time_ps=max_time_ps,
                                    progress=not args.no_progress)
        extra = {"peptide": peptide.to_dict(), "resolution": args.resolution, "dataset": args.dataset}
    summary = {k: v for k, v in summary.items() if k != "floor"}
    write_sidecar(Path(args.out) / "model.eqx", config, seed=seed, data=args.data, **extra, **summary)


def cmd_pmf_validate(args, config):
    from cgbench.pmf_evaluation import validate_muller_brown_pmf, validate_peptide_pmf
    from cgbench.provenance import write_sidecar

    out = Path(args.out)
    model = Path(args.model)
    seed = _run_seed(config, args.system, "cg_md", args.resolution or "x", args.data)
    if args.system == "muller_brown":
        summary = validate_muller_brown_pmf(model, out=out)
    else:
        from cgbench.datasets import load_dataset
        from cgbench.peptides import peptide_from_config

        peptide = peptide_from_config(args.system, config)
        summary = validate_peptide_pmf(model, load_dataset(args.start), load_dataset(args.reference),
                                       _pmf_mapping(args.structure, args.resolution), spec=config["pmf"]["cg_md"],
                                       temperature=peptide.temperature, seed=seed, out=out,
                                       progress=not args.no_progress)
    write_sidecar(out / "validation.json", config, seed=seed, system=args.system, data=args.data,
                  resolution=args.resolution, **{k: v for k, v in summary.items() if not isinstance(v, list)})


def cmd_pmf_table(args, config):
    from cgbench.pmf_evaluation import write_pmf_table

    for p in write_pmf_table(args.inputs, args.out, config):
        log.info("wrote %s", p)


def cmd_pmf_figure(args, config):
    from cgbench.pmf_evaluation import muller_brown_pmf_figure, peptide_pmf_figure
    from cgbench.provenance import write_sidecar

    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        runs[tuple(name.split(":")) if ":" in name else name] = path
    if args.system == "muller_brown":
        path = muller_brown_pmf_figure(runs, args.out)
    else:
        from cgbench.datasets import load_dataset

        reference = load_dataset(args.reference)
        path = peptide_pmf_figure(args.system, runs, reference, args.out, kT=reference["kT"])
    write_sidecar(path, config, seed=config["seed"], system=args.system, inputs=args.runs)
    log.info("wrote %s", path)


def _pairs_arg(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments → dict (later keys win)."""
    return dict(item.split("=", 1) for item in items or [])


def cmd_cgbg(args, config):
    from cgbench.cgbg_stage import run_muller_brown_cgbg, run_peptide_cgbg
    from cgbench.provenance import write_sidecar

    from cgbench.pmf import load_pmf

    seed = _run_seed(config, args.system, "cgbg", args.resolution or "x", args.data)
    pmfs = {data: load_pmf(path)[0] for data, path in _pairs_arg(args.pmfs).items()}
    if args.system == "muller_brown":
        from cgbench import muller_brown as mb

        scores = run_muller_brown_cgbg(mb.load_data(args.dataset), data=args.data, pmfs=pmfs,
                                       training_frames=config["muller_brown"]["pmf"]["training_frames"],
                                       spec=config["muller_brown"]["cgbg"], seed=seed, out=args.out,
                                       progress=not args.no_progress)
    else:
        from cgbench.datasets import load_dataset
        from cgbench.peptides import peptide_from_config

        peptide = peptide_from_config(args.system, config)
        dataset = load_dataset(args.dataset)
        scores = run_peptide_cgbg(dataset, _pmf_mapping(args.structure, args.resolution), data=args.data,
                                  pmfs=pmfs, reference=load_dataset(args.reference), spec=config["cgbg"],
                                  training_frames=config["pmf"]["training_frames"], kT=dataset["kT"], seed=seed,
                                  out=args.out, system=peptide.name, progress=not args.no_progress)
    write_sidecar(Path(args.out) / "scores.json", config, seed=seed, system=args.system, data=args.data,
                  resolution=args.resolution, timing=scores["timing"])


def cmd_cgbg_tables(args, config):
    from cgbench.cgbg_tables import write_cgbg_tables

    for p in write_cgbg_tables(args.inputs, pmf_folders=args.pmfs, baselines=args.baselines or [],
                               references=_pairs_arg(args.references), md=args.md or [], out_dir=args.out,
                               config=config):
        log.info("wrote %s", p)


def cmd_cgbg_figure(args, config):
    from cgbench.cgbg_tables import cost_figure, peptide_figure

    if args.accuracy:
        path = cost_figure(args.accuracy, args.timing, args.out)
    else:
        from cgbench.datasets import load_dataset

        path = peptide_figure(args.system, args.inputs, load_dataset(args.reference), args.out)
    log.info("wrote %s", path)


def cmd_parity(args, config):
    """JAX energy vs OpenMM Reference on sampled configurations; JSON on stdout, 1 above tolerance."""
    import json

    from cgbench.parity import parity_report
    from cgbench.peptides import Peptide, unknown_residue_letters

    if not args.sequence or unknown_residue_letters(args.sequence):
        raise SystemExit(f"cgbench parity: --sequence {args.sequence!r}: expected one-letter codes of the 20 "
                         f"standard residues (upper case), e.g. KGP; unknown: "
                         f"{', '.join(unknown_residue_letters(args.sequence)) or 'empty sequence'}")
    # The config's peptide defaults (force field, temperature, pH, constraints), any sequence.
    defaults = dict(config["peptide_defaults"])
    defaults["implicit_solvents"] = tuple(defaults["implicit_solvents"])
    peptide = Peptide(name=f"parity-{args.sequence}", sequence=args.sequence, **defaults)
    report = parity_report(peptide, args.solvent, args.samples, seed=args.seed,
                           energy_tolerance=args.energy_tolerance, force_tolerance=args.force_tolerance,
                           dtype=args.dtype)
    print(json.dumps(report, indent=2))
    if not report["passed"]:
        log.error("parity failed: relative energy error %.3g (tolerance %.3g), force error %.3g kJ/mol/nm "
                  "(tolerance %.3g)", report["max_rel_energy_error"], report["energy_tolerance"],
                  report["max_abs_force_error"], report["force_tolerance"])
        return 1
    return 0


def cmd_jobs(args, config):
    from cgbench.timing import write_timing

    for p in write_timing(args.inputs, args.root, args.out):
        log.info("wrote %s", p)


def cmd_bench(args, config):
    from cgbench import bench

    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return bench.run(bench_dir=Path(args.benchmarks), storage=Path(args.storage), tag=args.tag,
                     fail_above=args.fail_above, save=not args.no_save, extra=extra)


# Subcommands that never touch JAX (no device selection, no JAX import).
NO_DEVICE = {"validate", "jobs", "ecg-peptide-report", "cgbg-tables", "cgbg-figure", "bench", "md", "simulations-table", "pmf-table"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgbench", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config YAML (default: %(default)s)")
    parser.add_argument("--preset", help="override the preset named in the config")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("validate", help="validate the configuration and print its hash").set_defaults(func=cmd_validate)

    p = sub.add_parser("nuts", help="NUTS reference samples of a synthetic target")
    p.add_argument("--target", required=True)
    p.add_argument("--out", required=True, help="samples .npz (a .provenance.json sidecar is written)")
    p.set_defaults(func=cmd_nuts)

    p = sub.add_parser("ecg-train", help="train ECG flows with tempering; resumes from a checkpoint")
    p.add_argument("--target", required=True)
    p.add_argument("--schedule", required=True, choices=["fixed", "adaptive", "none"])
    p.add_argument("--out", required=True, help="training folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ecg_train)

    for name, func, help_ in (("evaluate", cmd_evaluate, "metrics of every model against the references"),
                              ("figures", cmd_figures, "figures of one synthetic target")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--target", required=True)
        p.add_argument("--models", nargs="*", default=[], metavar="METHOD=DIR")
        p.add_argument("--nuts", required=True, help="NUTS samples .npz")
        if name == "evaluate":
            p.add_argument("--out", required=True, help="CSV of rows")
        else:
            p.add_argument("--out-dir", required=True)
        p.set_defaults(func=func)

    p = sub.add_parser("build-peptide", help="build a capped peptide from its config sequence")
    p.add_argument("--peptide", required=True, help="name under `peptides:` in the config")
    p.add_argument("--out", required=True, help="structure .pdb")
    p.set_defaults(func=cmd_build_peptide)

    p = sub.add_parser("peptide-system", help="serialised OpenMM system of a built peptide")
    p.add_argument("--peptide", required=True, help="name under `peptides:` in the config")
    p.add_argument("--solvent", required=True, choices=["vacuum", "obc1", "obc2", "explicit"])
    p.add_argument("--structure", required=True, help="structure .pdb from build-peptide")
    p.add_argument("--out", required=True, help="system .xml")
    p.add_argument("--solvated", help="explicit solvent only: where to write the solvated .pdb")
    p.set_defaults(func=cmd_peptide_system)

    from cgbench import parity

    p = sub.add_parser("parity", help="check the JAX energy of a peptide against OpenMM (JSON; exit 1 above tolerance)",
                       description="Build ACE-SEQUENCE-NME, draw configurations (minimised, Gaussian-perturbed, "
                       "Langevin MD frames) and compare JAX energies/forces with OpenMM's Reference platform. "
                       "The peptide needs no entry under peptides: in the config; its peptide_defaults "
                       "(force field, temperature, pH, constraints) are used.")
    p.add_argument("--sequence", required=True, help="one-letter codes between the caps, e.g. KGP")
    p.add_argument("--solvent", required=True, choices=["vacuum", "obc1", "obc2"])
    p.add_argument("--samples", type=int, default=100, help="configurations (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    (e64, f64), (e32, f32) = parity.TOLERANCES["float64"], parity.TOLERANCES["float32"]
    p.add_argument("--energy-tolerance", type=float,
                   help=f"largest relative energy error (default {e64:g} in float64, {e32:g} in float32)")
    p.add_argument("--force-tolerance", type=float,
                   help=f"largest force error, kJ/mol/nm (default {f64:g} in float64, {f32:g} in float32)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="JAX precision (default %(default)s; float64 runs under jax.enable_x64)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("md", help="one MD replica of a peptide (OpenMM); resumes from its checkpoint")
    p.add_argument("--peptide", required=True, help="name under `peptides:` in the config")
    p.add_argument("--run", required=True, choices=list(MD_RUNS))
    p.add_argument("--replica", type=int, required=True, help="replica number (seeds the run)")
    p.add_argument("--structure", required=True, help="start structure .pdb (solvated.pdb for explicit)")
    p.add_argument("--solute", help="the solute's .pdb when --structure is solvated (its atoms come first)")
    p.add_argument("--system", required=True, help="OpenMM system .xml")
    p.add_argument("--threads", type=int, default=1, help="threads of OpenMM's CPU platform")
    p.add_argument("--out", required=True, help="replica folder (trajectory.h5, frames.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("cg-dataset", help="map the replicas of an MD run to CG resolutions")
    p.add_argument("--peptide", required=True)
    p.add_argument("--run", required=True, choices=list(MD_RUNS))
    p.add_argument("--resolutions", nargs="+", required=True, choices=["all_atom", "heavy_atom", "core_beta"])
    p.add_argument("--replicas", nargs="+", required=True, help="replica folders")
    p.add_argument("--out", nargs="+", required=True, help="dataset .npz, one per resolution")
    p.set_defaults(func=cmd_cg_dataset)

    p = sub.add_parser("simulations", help="convergence diagnostics of one MD run (or the NUTS reference)")
    p.add_argument("--peptide", required=True)
    p.add_argument("--run", required=True, choices=[*MD_RUNS, "nuts"])
    p.add_argument("--dataset", required=True, help="all_atom dataset .npz (or the NUTS .npz for run nuts)")
    p.add_argument("--replicas", nargs="*", default=[], help="replica folders (for ns/day)")
    p.add_argument("--out", required=True, help="rows .csv")
    p.add_argument("--figure", required=True, help="dihedral figure .png")
    p.set_defaults(func=cmd_simulations)

    p = sub.add_parser("simulations-table", help="gather MD diagnostics into results/tables/simulations.csv|md")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_simulations_table)

    p = sub.add_parser("peptide-nuts", help="NUTS reference of a peptide in implicit solvent (JAX energy)")
    p.add_argument("--peptide", required=True)
    p.add_argument("--structure", required=True, help="structure .pdb")
    p.add_argument("--system", required=True, help="OpenMM system .xml of the implicit solvent")
    p.add_argument("--out", required=True, help="samples .npz")
    p.set_defaults(func=cmd_peptide_nuts)

    for name, func, help_ in (("ecg-peptide-train", cmd_ecg_peptide_train,
                               "data-free ECG training of a peptide (tempering; resumes from a checkpoint)"),
                              ("ecg-peptide-evaluate", cmd_ecg_peptide_evaluate,
                               "score a peptide's ECG models against references at each scored beta")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--peptide", required=True)
        p.add_argument("--potential", required=True, choices=["obc1", "obc2", "pmf_heavy_atom"])
        p.add_argument("--structure", required=True, help="structure .pdb")
        p.add_argument("--system", required=True, help="OpenMM system .xml (energy and masses)")
        p.add_argument("--pmf", help="PMF model (pmf_heavy_atom)")
        if name == "ecg-peptide-train":
            p.add_argument("--out", required=True, help="training folder")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
        else:
            p.add_argument("--models", required=True, help="training folder")
            p.add_argument("--reference", nargs="+", required=True, metavar="BETA=FILE.npz")
            p.add_argument("--out", required=True, help="evaluation .csv")
            p.add_argument("--out-dir", required=True, help="structures (.xtc) and observables")
        p.set_defaults(func=func)

    p = sub.add_parser("ecg-peptide-reference", help="NUTS reference of a peptide at T/beta (implicit solvent)")
    p.add_argument("--peptide", required=True)
    p.add_argument("--beta", required=True, type=float, help="relative to the peptide's temperature")
    p.add_argument("--structure", required=True, help="structure .pdb")
    p.add_argument("--system", required=True, help="OpenMM system .xml of the reference's implicit solvent")
    p.add_argument("--out", required=True, help="samples .npz")
    p.set_defaults(func=cmd_ecg_peptide_reference)

    p = sub.add_parser("ecg-peptide-report", help="results/tables/ecg_peptides.csv|md and the peptide ECG figures")
    p.add_argument("--inputs", nargs="+", required=True, help="evaluation .csv files (observables beside)")
    p.add_argument("--out-dir", required=True, help="tables folder")
    p.add_argument("--figures-dir", required=True, help="figures folder")
    p.set_defaults(func=cmd_ecg_peptide_report)

    p = sub.add_parser("muller-brown-data", help="Langevin data of Müller-Brown, unbiased or with the static bias")
    p.add_argument("--data", required=True, choices=["biased", "unbiased"])
    p.add_argument("--out", required=True, help="data .npz")
    p.set_defaults(func=cmd_muller_brown_data)

    p = sub.add_parser("pmf-train", help="force-match a PMF (a peptide at a resolution, or Müller-Brown); resumes")
    p.add_argument("--system", required=True, help="peptide name, or muller_brown")
    p.add_argument("--resolution", choices=["core_beta", "heavy_atom", "all_atom"], help="peptides only")
    p.add_argument("--data", required=True, choices=["biased", "unbiased"])
    p.add_argument("--dataset", required=True, help="CG dataset .npz (Müller-Brown: data .npz)")
    p.add_argument("--cut-to", help="dataset whose replica length cuts this one's replicas (PMF_U)")
    p.add_argument("--structure", help="structure .pdb (peptides: the bead topology)")
    p.add_argument("--out", required=True, help="output folder (model.eqx, model.json, history.csv, training.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pmf_train)

    p = sub.add_parser("pmf-validate", help="CG MD with a PMF against the reference MD (Müller-Brown: exact PMF)")
    p.add_argument("--system", required=True, help="peptide name, or muller_brown")
    p.add_argument("--resolution", choices=["core_beta", "heavy_atom", "all_atom"], help="peptides only")
    p.add_argument("--data", required=True, choices=["biased", "unbiased"])
    p.add_argument("--model", required=True, help="model.eqx of pmf-train")
    p.add_argument("--start", help="dataset the CG MD replicas start from")
    p.add_argument("--reference", help="dataset of the reference MD")
    p.add_argument("--structure", help="structure .pdb")
    p.add_argument("--out", required=True, help="output folder (validation.json, cg_md.npz | curves.npz)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pmf_validate)

    p = sub.add_parser("pmf-table", help="gather PMF folders into results/tables/pmf.csv|md")
    p.add_argument("--inputs", nargs="+", required=True, help="pmf-train folders (with validation/)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_pmf_table)

    p = sub.add_parser("pmf-figure", help="free energy from CG MD vs reference (Müller-Brown: learned vs exact PMF)")
    p.add_argument("--system", required=True, help="peptide name, or muller_brown")
    p.add_argument("--runs", nargs="+", required=True,
                   help="RESOLUTION:DATA=cg_md.npz (peptides) or DATA=curves.npz (Müller-Brown)")
    p.add_argument("--reference", help="reference dataset .npz (peptides)")
    p.add_argument("--out", required=True, help="figure .png")
    p.set_defaults(func=cmd_pmf_figure)

    p = sub.add_parser("cgbg", help="CG-BG: flows on a data source's frames, proposals reweighted with the PMFs, "
                       "scores")
    p.add_argument("--system", required=True, help="peptide name, or muller_brown")
    p.add_argument("--resolution", choices=["core_beta", "heavy_atom", "all_atom"], help="peptides only")
    p.add_argument("--data", required=True, choices=["biased", "unbiased"], help="the data source the flows learn from")
    p.add_argument("--dataset", required=True, help="CG dataset .npz of that data source's MD "
                   "(Müller-Brown: data .npz)")
    p.add_argument("--pmfs", nargs="+", required=True, help="DATA=model.eqx of every PMF to reweight with")
    p.add_argument("--reference", help="reference MD dataset (peptides)")
    p.add_argument("--structure", help="structure .pdb (peptides)")
    p.add_argument("--out", required=True, help="output folder (flows, proposals, scores.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_cgbg)

    p = sub.add_parser("cgbg-tables", help="results/tables/accuracy.csv|md and timing.csv|md (CG-BG)")
    p.add_argument("--inputs", nargs="+", required=True, help="cgbg folders (scores.json)")
    p.add_argument("--pmfs", nargs="*", default=[], help="pmf-train folders (training.json: PMF training time)")
    p.add_argument("--baselines", nargs="*", help="PEPTIDE:SOLVENT=dataset.npz of unbiased MD (explicit = reference)")
    p.add_argument("--references", nargs="*", help="PEPTIDE=dataset.npz of the reference MD")
    p.add_argument("--md", nargs="*", help="PEPTIDE=frames.npz.provenance.json of each reference MD replica")
    p.add_argument("--out", required=True, help="tables folder")
    p.set_defaults(func=cmd_cgbg_tables)

    p = sub.add_parser("cgbg-figure", help="CG-BG figures: a peptide's Ramachandran panels and profiles, "
                       "or accuracy vs cost")
    p.add_argument("--system", help="peptide name")
    p.add_argument("--inputs", nargs="*", help="cgbg folders of the peptide")
    p.add_argument("--reference", help="reference MD dataset")
    p.add_argument("--accuracy", help="accuracy.csv (the cost figure)")
    p.add_argument("--timing", help="timing.csv (the cost figure)")
    p.add_argument("--out", required=True, help="figure .png")
    p.set_defaults(func=cmd_cgbg_figure)

    p = sub.add_parser("tables", help="gather evaluations into results/tables")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("jobs", help="gather Snakemake benchmark files into the table of every job's cost")
    p.add_argument("--root", required=True, help="benchmark folder: ROOT/<rule>/<job>.tsv")
    p.add_argument("--inputs", nargs="+", required=True, help="benchmark .tsv files")
    p.add_argument("--out", required=True, help="jobs .csv (a .md is written next to it)")
    p.set_defaults(func=cmd_jobs)

    from cgbench import bench

    p = sub.add_parser("bench", help="run benchmarks/, fail on a median slowdown against the last saved run, save",
                       description="Run benchmarks/ (pytest-benchmark), compare every median with the last "
                       "run saved for this machine tag, fail above --fail-above percent slower, save this run.")
    p.add_argument("--fail-above", type=float, default=bench.DEFAULT_FAIL_ABOVE, metavar="PERCENT",
                   help="fail when a median is this many percent slower than the saved run (default %(default)g)")
    p.add_argument("--tag", help="machine tag (default: this machine's hardware class, e.g. x86_64-amd-epyc-7b13-2cpu)")
    p.add_argument("--storage", default=str(bench.DEFAULT_STORAGE), help="saved runs (default %(default)s)")
    p.add_argument("--benchmarks", default=str(bench.BENCHMARK_DIR), help="benchmark folder (default %(default)s)")
    p.add_argument("--no-save", action="store_true", help="compare only; keep the last saved run as it is")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest (e.g. -k ecg)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config, preset=args.preset)
    except ConfigError as error:
        print(f"cgbench: {args.config}: {error}", file=sys.stderr)
        return 2
    if args.command not in NO_DEVICE:
        _select_device(config)
    return args.func(args, config) or 0


if __name__ == "__main__":
    sys.exit(main())
