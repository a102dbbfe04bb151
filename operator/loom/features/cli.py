"""`loom features ...`: the runtime's command line (what pipeline pods run, and what you run by hand).

Rule: every outcome ends with ONE JSON summary line, the last on stdout (and in $LOOM_TERMINATION_LOG), and
the exit code says what kind of outcome it was: 0 done, 65 bad input (permanent), 69 a source or Redis
unreachable (retry), 70 internal error (traceback on stderr first). Heavy imports (pyarrow, DuckDB, redis)
happen inside the commands, so `loom run` and `loom crds` never load them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

ENGINE_CHOICES = ("local", "spark", "ray")


def add_commands(commands: Any) -> None:
    """Add `features run`, `features stream` and `features feast-repo` to the `loom` subparsers."""
    features = commands.add_parser("features", help="compute feature pipelines (the runtime of their pods)")
    sub = features.add_subparsers(dest="features_command", required=True)

    run = sub.add_parser(
        "run",
        help="compute one window of a batch pipeline and write its sinks",
        description="Compute the window [--start, --end) and write the offline and online sinks. "
        "Prints one JSON summary line last; exit 0, 65 (bad input), 69 (unreachable), 70 (internal).",
    )
    run.add_argument(
        "-f", "--file", default=None, help="FeaturePipeline YAML/JSON ('-': stdin; default: $LOOM_PIPELINE)"
    )
    run.add_argument("--start", required=True, help="window start, RFC 3339 (inclusive)")
    run.add_argument("--end", required=True, help="window end, RFC 3339 (exclusive)")
    run.add_argument("--engine", choices=ENGINE_CHOICES, default="local", help="engine (default: local)")
    run.set_defaults(func=_run)

    stream = sub.add_parser("stream", help="consume a pipeline's Redis Stream (mode: streaming)")
    stream.add_argument(
        "-f", "--file", default=None, help="FeaturePipeline YAML/JSON (default: $LOOM_PIPELINE)"
    )
    stream.add_argument("--consumer", default=None, help="consumer name (default: $POD_NAME or the hostname)")
    stream.set_defaults(func=_stream)

    repo = sub.add_parser(
        "feast-repo",
        help="write the Feast feature repository of a format: feast pipeline",
        description="Write feature_store.yaml (the sink's Redis online store) and features.py (Entities, "
        "FileSource, FeatureView typed from the transform's output) into --out, so `feast apply` there "
        "registers what Loom writes. Prints one JSON summary line; exit 0 or 65 (bad input).",
    )
    repo.add_argument(
        "-f", "--file", default=None, help="FeaturePipeline YAML/JSON (default: $LOOM_PIPELINE)"
    )
    repo.add_argument("--out", required=True, help="directory of the Feast repository (created)")
    repo.set_defaults(func=_feast_repo)


def _run(args: argparse.Namespace) -> int:
    state: dict[str, Any] = {}
    # A deleted pod gets SIGTERM: unwind (the staging is removed, the dataset stays as it was), exit 143.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def body() -> dict[str, Any]:
        from loom.features.config import load_pipeline, make_window
        from loom.features.run import run_window

        state["window"] = window = make_window(args.start, args.end)
        pipeline = load_pipeline(args.file)
        return run_window(pipeline, window, engine=args.engine).to_dict()

    return guarded("loom features run", body, lambda: state.get("window"))


def _stream(args: argparse.Namespace) -> int:
    def body() -> dict[str, Any]:
        from loom.features.config import load_pipeline
        from loom.features.stream import serve

        return serve(load_pipeline(args.file), consumer=args.consumer)

    return guarded("loom features stream", body, lambda: None)


def _feast_repo(args: argparse.Namespace) -> int:
    def body() -> dict[str, Any]:
        from loom.features.config import load_pipeline
        from loom.features.feast_repo import write_repo

        return write_repo(load_pipeline(args.file), args.out)

    return guarded("loom features feast-repo", body, lambda: None)


def guarded(name: str, body: Callable[[], dict[str, Any]], window: Callable[[], Any]) -> int:
    """Run `body`, report its summary (or the failure) as the last stdout line; the exit code."""
    from loom.features.errors import PipelineError, internal
    from loom.features.summary import failure, report

    try:
        report(body())
        return 0
    except PipelineError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        report(failure(exc.message, exc.exit_code, window()))
        return exc.exit_code
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        err = internal(exc)
        report(failure(err.message, err.exit_code, window()))
        return err.exit_code
