"""`loom gpu-agent`: the GPU agent's command line (added to `loom` by loom.cli).

Environment: NODE_NAME (the node to write; the DaemonSet sets it from spec.nodeName), and, for tests
only, LOOM_GPU_AGENT_FAKE=<script.json>: read the fake NVML that script drives (loom.gpu.fake).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.gpu.nvml import Nvml

log = logging.getLogger("loom.gpu.agent")


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "gpu-agent",
        help="GPU agent: NVML metrics (DCGM names) and GPU health on this node (condition GPUHealthy, taint)",
    )
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME"),
        help="the node this agent runs on, the only one it writes (default: $NODE_NAME)",
    )
    p.add_argument(
        "--export-only", action="store_true", help="export metrics only; never write a node (e.g. on a host)"
    )
    p.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default 5)")
    p.add_argument(
        "--healthy-period",
        type=float,
        default=300.0,
        help="seconds without a fatal fault before the condition and the taint are cleared (default 300)",
    )
    p.add_argument(
        "--resync",
        type=float,
        default=60.0,
        help="seconds between re-checks of the node's marks (default 60)",
    )
    p.add_argument(
        "--xid-action",
        action="append",
        default=[],
        metavar="XID=ACTION",
        help="override the fault policy for one XID, e.g. 13=Ignore or 48=RebootNode (repeatable)",
    )
    p.add_argument("--address", default="0.0.0.0", help="address of /metrics and /healthz (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=9400, help="port of /metrics and /healthz (default 9400)")
    p.add_argument(
        "--hostname", default=None, help="the Hostname label (default: --node, else the host's name)"
    )
    p.set_defaults(func=_run)


def _nvml_opener() -> Callable[[], Nvml]:
    fake = os.environ.get("LOOM_GPU_AGENT_FAKE")
    if fake:
        from loom.gpu.fake import FakeNvml

        log.warning("LOOM_GPU_AGENT_FAKE=%s: reading a fake NVML (tests only)", fake)
        return lambda: FakeNvml.from_file(fake)
    from loom.gpu.pynvml_backend import PynvmlNvml

    return PynvmlNvml


def _run(args: argparse.Namespace) -> int:
    # imported here, so that other `loom` commands (a feature run's pod) start without them
    from loom.gpu.agent import Agent, KubeNodes, Settings, serve
    from loom.gpu.exporter import AgentMetrics
    from loom.gpu.policy import parse_xid_actions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        actions = parse_xid_actions(args.xid_action)
    except ValueError as e:
        log.error("%s", e)
        return 2
    node = None if args.export_only else args.node
    if not args.export_only and not node:
        log.error(
            "no node to write: set NODE_NAME (in a DaemonSet, from the downward API: fieldRef spec.nodeName) "
            "or pass --node NAME; --export-only serves metrics without writing a node"
        )
        return 2
    settings = Settings(
        node=node,
        interval=args.interval,
        healthy_period=args.healthy_period,
        resync=args.resync,
        xid_actions=actions,
    )
    metrics = AgentMetrics(args.hostname or node or socket.gethostname())
    agent = Agent(settings, _nvml_opener(), KubeNodes() if node else None, metrics)
    server = serve(agent, args.address, args.port)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    log.info(
        "gpu-agent on %s: /metrics and /healthz on %s:%d, a check every %g s, healthy period %g s",
        node or "(export only)",
        args.address,
        server.server_address[1],
        args.interval,
        args.healthy_period,
    )
    try:
        agent.run(stopped)
    finally:
        server.shutdown()
    return 0
