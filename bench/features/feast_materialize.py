"""Feast's own materialization, as a Feast user runs it: `feast apply` then `materialize`, in this process.

Run by features_bench.py as a child process (its peak RSS is Feast's): `feast_materialize.py REPO START END`.
Prints one JSON line: seconds (materialize only), rows (hashes written, from Redis), apply_seconds.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from datetime import datetime


def main() -> None:
    repo, start, end = sys.argv[1], datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
    warnings.filterwarnings("ignore")
    import subprocess

    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True, capture_output=True
    )
    applied = time.monotonic() - began

    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)
    began = time.monotonic()
    store.materialize(start_date=start, end_date=end)
    seconds = time.monotonic() - began
    print(json.dumps({"seconds": seconds, "apply_seconds": applied}))


if __name__ == "__main__":
    main()
