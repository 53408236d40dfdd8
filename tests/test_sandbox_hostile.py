"""A run ends the way the same program ends under ``python``: a signal it sends itself kills
it, the threads it leaves running and its atexit handlers finish first, a process it starts
through multiprocessing's 'spawn' is a recorded error, and threads still writing to stderr
cannot replace its error line. Found by an adversarial probe of the real Sandbox: each case
came back as a clean run, without the output Python gives, or with the wrong error."""

from __future__ import annotations

import time
import uuid
from math import factorial
from pathlib import Path

import pytest

from pipeline.execution.sandbox import Sandbox

TIMEOUT_S = 2.0
SLACK_S = 4.0  # a loaded 2-core machine: kill, collect and reply take a moment


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=TIMEOUT_S, memory_mb=256) as sb:
        yield sb


def assert_pool_works(sb: Sandbox) -> None:
    assert sb.run("print(6 * 7)").stdout == "42\n"


# Each run is pid 1 of its own pid namespace, and the kernel drops a signal with the default
# action sent to a namespace's pid 1 from inside it: these runs used to print 'after'.
@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import os\nos.kill(os.getpid(), 9)", "Killed: signal 9 (SIGKILL)"),
        ("import os\nos.killpg(os.getpgrp(), 9)", "Killed: signal 9 (SIGKILL)"),
        (
            "import signal, threading\nsignal.pthread_kill(threading.get_ident(), 9)",
            "Killed: signal 9 (SIGKILL)",
        ),
        ("import signal\nsignal.raise_signal(signal.SIGTERM)", "Killed: signal 15 (SIGTERM)"),
        ("import ctypes\nctypes.CDLL(None)['raise'](10)", "Killed: signal 10 (SIGUSR1)"),
        ("import signal, time\nsignal.alarm(1)\ntime.sleep(1.5)", "Killed: signal 14 (SIGALRM)"),
    ],
)
def test_a_signal_the_run_sends_itself_kills_it(sandbox, code, error):
    result = sandbox.run("print('before')\n" + code + "\nprint('after')")
    assert (result.stdout, result.error, result.timed_out) == ("before\n", error, False)
    assert_pool_works(sandbox)


def test_signal_handlers_of_the_code_still_run(sandbox):
    code = (
        "import os, signal\n"
        "signal.signal(signal.SIGTERM, lambda n, f: print('caught', n))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\nprint(signal.getsignal(signal.SIGINT).__name__)"
    )
    result = sandbox.run(code)
    assert (result.stdout, result.error) == ("caught 15\ndefault_int_handler\n", None)


def test_threads_left_running_finish_before_the_run_ends(sandbox):
    late = (
        "import threading, time\n"
        "def work():\n    time.sleep(0.3)\n    print('from the thread')\n"
        "threading.Thread(target=work).start()\nprint('main')"
    )
    for result in sandbox.run_many([late] * 2):
        assert (result.stdout, result.error) == ("main\nfrom the thread\n", None)
    raised = sandbox.run(late.replace("print('main')", "raise ValueError('main')"))
    assert (raised.stdout, raised.error) == ("from the thread\n", "ValueError: main")
    # python never ends while a non-daemon thread runs; a daemon thread does not hold it
    spin = "import threading\ndef spin():\n    while True:\n        pass\n"
    started = time.monotonic()
    endless = sandbox.run(spin + "threading.Thread(target=spin).start()\nprint('main')")
    assert endless.timed_out and endless.stdout == "main\n"
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S
    daemon = sandbox.run(spin + "threading.Thread(target=spin, daemon=True).start()\nprint(1)")
    assert (daemon.stdout, daemon.error) == ("1\n", None)
    assert_pool_works(sandbox)


def test_atexit_handlers_run_when_the_code_ends(sandbox):
    result = sandbox.run("import atexit\natexit.register(print, 'bye')\nprint('main')")
    assert (result.stdout, result.error) == ("main\nbye\n", None)
    hang = sandbox.run("import atexit, time\natexit.register(time.sleep, 100)\nprint('main')")
    assert hang.timed_out and hang.stdout == "main\n"
    assert_pool_works(sandbox)


def test_a_spawned_multiprocessing_process_is_a_recorded_error(sandbox):
    # 'spawn' starts its interpreter through _posixsubprocess without an audit event, and
    # ignores the exec failure: the run used to end cleanly with p.exitcode == 255.
    code = (
        "import multiprocessing as mp\n"
        "p = mp.get_context('spawn').Process(target=print, args=('child',))\n"
        "p.start()\np.join()\nprint('exit code', p.exitcode)"
    )
    result = sandbox.run(code)
    assert result.stdout == ""
    assert result.error == (
        "PermissionError: [Errno 1] step code may not start processes (_posixsubprocess)"
    )
    assert_pool_works(sandbox)


def test_a_mixed_batch_keeps_ordinary_results_and_touches_nothing_outside(sandbox, tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    planted = Path.home() / f"pwned_{uuid.uuid4().hex}"
    hostile = [
        "while True:\n    pass",
        "x = bytearray(8 * 2**30)",
        "import ctypes\nctypes.string_at(0)",
        "import os\nos.closerange(0, 1024)\nraise ValueError('silenced?')",
        f"import os\nos.remove({str(keep)!r})",
        f"open({str(planted)!r}, 'w').write('x')",
        "import os\nos.kill(os.getpid(), 9)\nprint('after')",
        "import sys\nsys.stdout.buffer.write(b'\\xff\\x00' * 2**21)",
    ]
    ordinary = [
        (f"import sympy\nprint(sympy.factorial({n}))", f"{factorial(n)}\n") for n in range(8)
    ]
    codes = [code for pair in zip(hostile, (c for c, _ in ordinary), strict=True) for code in pair]
    started = time.monotonic()
    results = sandbox.run_many(codes)
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S  # one timeout, the rest at once
    for result in results[0::2]:
        assert result.error is not None or result.timed_out, result
    assert [r.stdout for r in results[1::2]] == [out for _, out in ordinary]
    assert keep.read_text() == "mine" and not planted.exists()
    assert [r.stdout for r in sandbox.run_many([c for c, _ in ordinary])] == [
        out for _, out in ordinary
    ]


def test_threads_writing_to_stderr_cannot_push_the_error_line_off_the_end(sandbox):
    # the error line goes last on stderr as the run ends; daemon threads that write on used to
    # land after it now and then, and their text came back as the run's error
    code = (
        "import sys, threading\n"
        "def noise():\n    while True:\n        sys.stderr.write('noise\\n')\n"
        "for _ in range(3):\n    threading.Thread(target=noise, daemon=True).start()\n"
        "raise ValueError('the real one')"
    )
    errors = {result.error for result in sandbox.run_many([code] * 40)}
    assert errors == {"ValueError: the real one"}
