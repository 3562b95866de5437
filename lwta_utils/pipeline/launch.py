"""Training and evaluation outside the notebooks, on one process or many (torch.distributed).

    python -m lwta_utils.pipeline.launch train --profile paper
    torchrun --standalone --nproc_per_node 8 -m lwta_utils.pipeline.launch train --profile paper --models wrn34_10_lwta_pgdat
    torchrun --standalone --nproc_per_node 8 -m lwta_utils.pipeline.launch evaluate --profile paper
    python -m lwta_utils.pipeline --profile paper --reuse     # the notebooks then reuse the checkpoints

``train`` trains the profile's models (all stages, or ``--stage``/``--models``)
exactly as the notebooks do, data-parallel when launched by torchrun (NCCL on
GPUs, gloo on CPUs; ``lwta_utils.core.distributed``), writing the same checkpoints
and records; ``evaluate`` runs the attack suite with the test examples sharded
over the processes. An interrupted ``train`` resumes from its saved state when
run again; checkpoints and records whose configuration hash matches are kept
(``--force`` redoes them). A bad parameter stops with one message (exit code 2)
before any work.
"""
from __future__ import annotations

import argparse
import os
import sys

from lwta_utils.config.loading import load_config, parse_set
from lwta_utils.config.schema import STAGES
from lwta_utils.core.distributed import init_distributed, launched, shutdown
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.provenance import usable_cores
from lwta_utils.core.runtime import get_device, seed_everything, set_threads
from lwta_utils.data.splits import load_data
from lwta_utils.pipeline.steps import evaluate_all, stage_models, train_stage


def threads_per_process(num_threads: int) -> int:
    """``num_threads``, or (0) the cores this process may use (its CPU affinity) shared by the
    processes of this node."""
    if num_threads:
        return num_threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if launched() else 1
    return max(1, usable_cores() // local)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lwta_utils.pipeline.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("train", "evaluate"))
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--out", default=None, help="output folder (default: the profile's out_dir)")
    ap.add_argument("--stage", action="append", default=None, help=f"train only these stages {STAGES}")
    ap.add_argument("--models", nargs="+", default=None, help="only these models of the profile")
    ap.add_argument("--force", action="store_true",
                    help="retrain / re-evaluate (default: keep checkpoints and records whose configuration hash matches)")
    ap.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)  # the default
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.profile, out_dir=args.out, overrides=parse_set(args.set))
        stages = args.stage or list(STAGES)
        for s in stages:
            if s not in STAGES:
                raise ConfigError(f"parameter '--stage' = {s!r} is not allowed: choose one of {', '.join(STAGES)}")
        for name in args.models or []:
            if name not in cfg.models:
                raise ConfigError(f"parameter '--models' = {name!r} is not allowed: choose among "
                                  f"{', '.join(cfg.models)}")
        device = get_device(cfg.device)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_threads(threads_per_process(cfg.num_threads))
    seed_everything(cfg.seed)
    ctx, device = init_distributed(device)
    try:
        splits = load_data(cfg)
        if args.command == "train":
            for stage in stages:
                names = [n for n in stage_models(cfg, stage) if args.models is None or n in args.models]
                if names:
                    train_stage(cfg, stage, splits, reuse=not args.force, names=names, ctx=ctx, device=device)
        else:
            evaluate_all(cfg, splits, args.models, ctx=ctx, device=device, reuse=not args.force)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
