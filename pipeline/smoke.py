"""`make smoke`: run the whole DAG with the smoke profile in a scratch copy of the repository.

The working tree is left untouched; the scratch folder is printed on the last line so a user
can inspect its data, `dvc metrics show` and `dvc plots show` there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.profiles import switch_profile
from pipeline.scratch import scratch_copy


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    scratch = scratch_copy(repo)
    switch_profile(scratch, "smoke")
    # Both DAGs, as `make repro` runs them, so `dvc status` is clean in the scratch copy.
    result = subprocess.run(["dvc", "repro"], cwd=scratch)
    if result.returncode == 0:
        result = subprocess.run(["dvc", "repro", "publish/dvc.yaml"], cwd=scratch)
    print(scratch)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
