"""Command line: one subcommand per workflow stage, so every stage runs without Snakemake.

    cgbench validate   [--config config.yaml] [--preset smoke]
    cgbench nuts       --target double_well --out results/double_well/nuts/samples.npz
    cgbench ecg-train  --target double_well --schedule fixed --out results/double_well/ecg/ecg
    cgbench evaluate   --target double_well --models ecg=DIR ... --nuts FILE --out FILE.csv
    cgbench tables     --inputs A.csv B.csv ... --out-dir results/tables
    cgbench figures    --target double_well --models ecg=DIR ... --nuts FILE --out-dir results/figures

``--config`` takes ``config.yaml`` (resolved with its preset, or ``--preset``) or a resolved
config written by the workflow. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cgbench.config import DEFAULT_CONFIG, ConfigError, config_hash, load_config

log = logging.getLogger("cgbench")


def _select_device(config: dict) -> None:
    """Thin switch: pin JAX to the configured platform before any computation."""
    import jax

    jax.config.update("jax_platforms", "cuda,cpu" if config["device"] == "gpu" else "cpu")


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

    p = sub.add_parser("tables", help="gather evaluations into results/tables")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_tables)
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
    if args.command != "validate":
        _select_device(config)
    args.func(args, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
