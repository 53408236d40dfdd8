"""What every stage process does around its work: reuse freed memory, end without teardown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_a_stage_ends_with_its_code_after_its_exit_handlers_and_flushed_output():
    result = run_python(
        "import atexit, sys\n"
        "from stages.common import exit_without_teardown\n"
        "atexit.register(print, 'exit handler ran')\n"
        "print('written', end='')\nprint(' to both', file=sys.stderr, end='')\n"
        "exit_without_teardown(3)\nprint('never')"
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        3, "writtenexit handler ran\n", " to both"
    )  # fmt: skip


def test_a_stage_that_returns_nothing_exits_with_zero():
    result = run_python(
        "from stages.common import exit_without_teardown\nexit_without_teardown(None)"
    )
    assert result.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's thresholds")
def test_memory_a_stage_frees_stays_in_the_process_for_its_next_allocations():
    # 256 MiB freed: glibc unmaps it (resident memory falls back) unless the thresholds are raised.
    probe = (
        "import os\n{setup}\n"
        "def resident(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "before = resident()\nblock = b'x' * (256 << 20)\ndel block\n"  # every page written
        "print(resident() - before > 200 << 20)"
    )
    plain = run_python(probe.format(setup="pass"))
    kept = run_python(probe.format(setup="import stages  # its package sets the thresholds"))
    assert (plain.stdout.strip(), kept.stdout.strip()) == ("False", "True"), (
        plain.stderr + kept.stderr
    )
