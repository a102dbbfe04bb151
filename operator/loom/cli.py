"""`loom` command line: run the operator, generate CRDs, run feature pipelines (`loom features`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loom.features.cli import add_commands as add_feature_commands
from loom.gpu.cli import add_commands as add_gpu_commands


def _crds(args: argparse.Namespace) -> int:
    from loom.crd import RESOURCES, crd_path, render, write_crds  # here: a pipeline pod's start skips it

    out = Path(args.out)
    if args.check:
        stale = [
            str(crd_path(out, m))
            for m in RESOURCES
            if not crd_path(out, m).exists() or crd_path(out, m).read_text() != render(m)
        ]
        if stale:
            print(f"stale CRDs (run `make crds`): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    for path in write_crds(out):
        print(path)
    return 0


def _run(args: argparse.Namespace) -> int:
    from loom.controllers import runner

    runner.run(
        namespaces=args.namespace,
        metrics_port=args.metrics_port,
        peering=args.peering,
        liveness_port=args.liveness_port,
        peering_priority=args.peering_priority,
        peering_lifetime=args.peering_lifetime,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom", description="Loom: ML workloads on GPU clusters.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator with every controller")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: the whole cluster",
    )
    run.add_argument(
        "--metrics-port", type=int, default=8080, help="port of the Prometheus /metrics endpoint"
    )
    run.add_argument("--liveness-port", type=int, default=8081, help="port of the /healthz endpoint (0: off)")
    run.add_argument(
        "--peering",
        default=None,
        help="Kopf peering name, so only one of several replicas acts (default: off)",
    )
    run.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        help="this replica's peering priority; the highest live one acts (default: by age, the oldest acts)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=None,
        help="seconds a replica that died without a word still counts as alive: a standby takes over "
        "after about this long (default: 10)",
    )
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="generate CRD YAML from the API models")
    crds.add_argument("--out", default="crds", help="output directory (default: crds)")
    crds.add_argument("--check", action="store_true", help="exit 1 when the files in --out are stale")
    crds.set_defaults(func=_crds)

    add_feature_commands(commands)
    add_gpu_commands(commands)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
