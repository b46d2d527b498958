"""Redelivery after crashes: seconds from SIGKILL to the redelivered execution starting again.

Runs the reliability suite's crash tests (tests/integration/reliability/test_crashes.py) with
many kill rounds, and has them merge what they measure into ``benchmarks/results/redelivery.json``
(the suite itself runs a few rounds and writes nothing). Run as root:
python benchmarks/redelivery.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "redelivery.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="kill rounds (pool processes, then workers)")
    args = parser.parse_args()
    env = {**os.environ, "SANDQ_REDELIVERY_ROUNDS": str(args.rounds)}
    env["SANDQ_REDELIVERY_RESULTS"] = str(RESULTS)
    test = "tests/integration/reliability/test_crashes.py"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", test],
                          cwd=REPO, env=env, check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)
    print(json.dumps(json.loads(RESULTS.read_text()), indent=2))


if __name__ == "__main__":
    main()
