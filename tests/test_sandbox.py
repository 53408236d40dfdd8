"""The sandbox runs model-written step code: normal code works, hostile code comes back as an
error within about the timeout, and the pool (and this test process) survive it."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.execution.sandbox import ExecResult, Sandbox, isolation_report
from pipeline.search import steps

TIMEOUT_S = 2.0
SLACK_S = 4.0  # a loaded 2-core CI machine: kill, collect and reply take a moment
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=TIMEOUT_S, memory_mb=256) as sb:
        yield sb


def needs_any(sb: Sandbox, *layers: str) -> None:
    """Skip a check that only holds when one of these isolation layers is active."""
    if not any(sb.isolation.get(layer) is True for layer in layers):
        pytest.skip(f"none of {layers} is active on this machine")


def assert_pool_works(sb: Sandbox) -> None:
    assert sb.run("print(6 * 7)").stdout == "42\n"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


# --------------------------------------------------------------------------- normal code


def test_prints_exact_sympy_result(sandbox):
    result = sandbox.run("import sympy\nprint(sympy.Rational(1, 3) * 3)")
    assert isinstance(result, ExecResult)
    assert (result.stdout, result.error, result.timed_out) == ("1\n", None, False)
    assert result.duration_s > 0


@pytest.mark.parametrize(
    ("code", "stdout"),
    [
        (
            "from sympy import symbols, Eq, solve\nx = symbols('x')\nprint(solve(Eq(3*x+7, 25), x))",
            "[6]\n",
        ),
        ("from sympy import *\nx = Symbol('x')\nprint(simplify((x**2 - 1) / (x - 1)))", "x + 1\n"),
        ("import numpy as np\nprint(int(np.arange(5).sum()))", "10\n"),
        ("from fractions import Fraction\nprint(Fraction(3, 4) * 48)", "36\n"),
        ("import math\nprint(math.comb(10, 3))", "120\n"),
        ("try:\n    1 / 0\nexcept ZeroDivisionError:\n    print('caught')", "caught\n"),
        ("def f(n):\n    return 1 if n < 2 else n * f(n - 1)\nprint(f(10))", "3628800\n"),
        # imported for the first time inside the run: Python's files stay readable
        ("from sympy.stats import Die, E\nprint(E(Die('X', 6)))", "7/2\n"),  # (1+...+6)/6
        ("import unicodedata\nprint(unicodedata.numeric('½'))", "0.5\n"),  # a C extension
    ],
)
def test_normal_step_code_works(sandbox, code, stdout):
    result = sandbox.run(code)
    assert (result.error, result.stdout) == (None, stdout)


def test_each_run_starts_from_a_fresh_namespace(sandbox):
    tamper = "x = 41\nimport math, builtins\nmath.pi = 3\nbuiltins.print = None\ndel __builtins__"
    assert sandbox.run(tamper).error is None
    assert sandbox.run("print(x)").error == "NameError: name 'x' is not defined"
    assert sandbox.run("import math\nprint(math.pi)").stdout == "3.141592653589793\n"


def test_a_step_sees_the_state_its_ancestors_built(sandbox):
    # docs/algorithm.md: a step runs after its ancestors' code; their prints stay in the
    # observation. Step 1 prints 24 (48 / 2), step 2 prints 72 (48 + 24).
    codes = [
        "clips = 48 // 2\nprint(clips)",
        "from sympy import Integer\nprint(Integer(48) + clips)",
    ]
    result = sandbox.run(steps.program(codes))
    assert (result.error, result.stdout) == (None, "24\n72\n")


def test_the_code_can_use_its_private_temp_folder(sandbox):
    code = "import os\nopen('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())\n"
    result = sandbox.run(code + "print(os.getcwd())")
    assert result.error is None
    text, folder = result.stdout.split()
    assert text == "kept"
    assert not Path(folder, "notes.txt").exists()  # the run's folder is gone with the run


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("1 / 0", "ZeroDivisionError: division by zero"),
        ("print(undefined_name)", "NameError: name 'undefined_name' is not defined"),
        ("x = = 1", "SyntaxError: invalid syntax"),
        ("import sys\nsys.exit(3)", "SystemExit: 3"),
        ("raise SystemExit", "SystemExit"),
        ("import os\nos._exit(1)", "ProcessExit: exit code 1"),
        ("import os\nos._exit(0)", "ProcessExit: exit code 0"),
        ("raise ValueError('x' * 10000)", None),  # checked for length below
    ],
)
def test_errors_are_the_last_traceback_line(sandbox, code, error):
    result = sandbox.run(code)
    assert result.error is not None and len(result.error) <= 300
    if error is not None:
        assert result.error == error


def test_output_before_an_error_is_kept(sandbox):
    result = sandbox.run("print('step 1 done')\n1 / 0")
    assert result.stdout == "step 1 done\n"
    assert result.error == "ZeroDivisionError: division by zero"


# --------------------------------------------------------------------------- hostile code

HOSTILE = {
    "infinite loop": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(1000)",
    "huge bytearray": "x = bytearray(10**11)",
    "huge list": "x = [0] * 10**10",
    "growing list": "x = []\nwhile True:\n    x.append(' ' * 10**6)",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "huge print": "print('x' * 10**9)",
    "print loop": "while True:\n    print('x' * 100)",
    "deep recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "exit": "import sys\nsys.exit(1)",
    "hard exit": "import os\nos._exit(0)",
    "kill parent": "import os\nos.kill(os.getppid(), 9)",
    "kill group": "import os\nos.killpg(0, 9)",
    "kill everyone": "import os\nos.kill(-1, 9)",
    "segfault": "import ctypes\nctypes.string_at(0)",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_code_is_an_error_and_the_pool_survives(sandbox, name):
    started = time.monotonic()
    result = sandbox.run(HOSTILE[name])
    assert result.error is not None, result
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S
    assert len(result.stdout) <= 64 * 1024
    assert_pool_works(sandbox)


@pytest.mark.parametrize(
    "code",
    [
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n"
        "        pass",  # swallows whatever the timeout might raise
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(0)\n"
        "while True:\n    pass",
        "import sympy\nprint(sympy.factorint(2**400 + 1))",  # C-heavy, minutes of work
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)",
    ],
)
def test_the_timeout_cannot_be_dodged(sandbox, code):
    started = time.monotonic()
    result = sandbox.run(code, timeout_s=0.5)
    assert result.error is not None
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert_pool_works(sandbox)


def test_closing_the_standard_streams_is_an_error_not_a_crash(sandbox):
    result = sandbox.run("import os\nfor fd in (0, 1, 2):\n    os.close(fd)\nprint('lost')")
    assert result.error == "OSError: [Errno 9] Bad file descriptor"
    assert_pool_works(sandbox)


def test_a_thread_left_running_does_not_leak_into_the_next_step(sandbox):
    # a daemon thread: python ends without waiting for it (a run waits for the others)
    code = (
        "import threading, time\n"
        "def chatter():\n    while True:\n        print('late')\n        time.sleep(0.01)\n"
        "threading.Thread(target=chatter, daemon=True).start()\ntime.sleep(0.05)"
    )
    assert sandbox.run(code).error is None
    time.sleep(0.1)
    assert [sandbox.run("print(1)").stdout for _ in range(4)] == ["1\n"] * 4


def test_timeouts_say_so(sandbox):
    result = sandbox.run("while True:\n    pass")
    assert result.timed_out
    assert result.error.startswith("TimeoutError:")


def test_a_run_can_have_its_own_timeout(sandbox):
    started = time.monotonic()
    result = sandbox.run("import time\ntime.sleep(30)", timeout_s=0.5)
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 0.5 + SLACK_S
    with pytest.raises(ValueError, match="timeout_s"):
        sandbox.run("print(1)", timeout_s=1e9)


def test_large_output_is_capped(sandbox):
    result = sandbox.run("print('x' * 200_000)")
    assert result.error is None
    assert result.truncated and result.stdout == "x" * 64 * 1024


def test_direct_writes_to_stdout_are_captured(sandbox):
    result = sandbox.run("import os\nos.write(1, b'raw\\n')\nprint('text')")
    assert result.stdout == "raw\ntext\n"


def test_network_is_unreachable(sandbox):
    needs_any(sandbox, "network_namespace", "landlock_network")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        code = "import socket\nsocket.create_connection(({!r}, {}), timeout=2)"
        assert sandbox.run(code.format("1.1.1.1", 53)).error is not None
        assert sandbox.run(code.format("127.0.0.1", port)).error is not None
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever reached us
    finally:
        listener.close()


def test_writes_outside_the_private_folder_fail(sandbox):
    needs_any(sandbox, "landlock_filesystem")
    targets = [Path(f"/tmp/pwned_{uuid.uuid4().hex}"), REPO / f"pwned_{uuid.uuid4().hex}"]
    for target in targets:
        result = sandbox.run(f"open({str(target)!r}, 'w').write('pwned')")
        # Landlock refuses (EACCES), or the filesystem view's read-only root does (EROFS)
        refused = ("PermissionError", "OSError: [Errno 30] Read-only file system")
        assert result.error is not None and result.error.startswith(refused), result
        assert not target.exists()


def test_signals_cannot_reach_this_process_or_the_workers(sandbox):
    needs_any(sandbox, "pid_namespace", "landlock_signal_scope", "uid_drop")
    workers = sandbox.worker_pids
    for target in [os.getpid(), *workers]:
        result = sandbox.run(f"import os\nos.kill({target}, 9)")
        assert result.error is not None
    assert all(Path(f"/proc/{pid}").exists() for pid in workers)
    assert sandbox.worker_pids == workers
    assert_pool_works(sandbox)


@pytest.mark.parametrize(
    ("code", "event"),
    [
        ("import os\nos.system('rm -rf ~')", "os.system"),
        ("import subprocess\nsubprocess.Popen(['sleep', '100'])", "subprocess.Popen"),
        ("import os\nwhile True:\n    os.fork()", "os.fork"),
        ("import multiprocessing as mp\nmp.Process(target=print).start()", "os.fork"),
        ("import os\nos.execv('/bin/sh', ['sh'])", "os.exec"),
    ],
)
def test_starting_a_process_is_a_recorded_error(sandbox, code, event):
    # os.system only returns an exit status: without the refusal 'rm -rf ~' was a clean step
    result = sandbox.run(code)
    assert result.error == f"PermissionError: [Errno 1] step code may not start processes ({event})"
    assert_pool_works(sandbox)


def test_no_program_can_be_executed_even_past_the_audit_hook(sandbox, tmp_path):
    needs_any(sandbox, "landlock_filesystem")
    # libc's system() skips Python's audit events; the shell's exec fails, so the forked
    # child exits 127 and system() returns 127 << 8 = 32512 (7 << 8 = 1792 had sh run).
    victim = tmp_path / "keep.txt"
    victim.write_text("mine")
    code = f"import ctypes\nprint(ctypes.CDLL(None).system(b'rm -rf {tmp_path}; exit 7'))"
    assert sandbox.run(code).stdout == "32512\n"
    assert victim.read_text() == "mine"


def test_files_outside_python_cannot_be_read(sandbox, tmp_path):
    needs_any(sandbox, "landlock_filesystem")
    secret = tmp_path / "token.txt"
    secret.write_text("hf_secret_value")
    targets = [secret, Path("/etc/passwd"), Path.home() / ".bashrc", REPO / "params.yaml"]
    # Landlock refuses the open; with the filesystem view the file is not there at all
    refusal = "PermissionError: [Errno 13] Permission denied"
    if sandbox.isolation.get("filesystem_view") is True:
        refusal = "FileNotFoundError: [Errno 2] No such file or directory"
    for target in targets:
        result = sandbox.run(f"print(open({str(target)!r}).read())")
        assert result.error == f"{refusal}: '{target}'"
        assert result.stdout == ""
    listing = sandbox.run(f"import os\nprint(os.listdir({str(Path.home())!r}))")
    assert listing.error is not None and listing.error.startswith("PermissionError")


def test_the_callers_environment_stays_out(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    with Sandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=256) as sb:
        assert sb.run("import os\nprint(os.environ.get('HF_TOKEN'))").stdout == "None\n"
        if not any(sb.isolation.get(layer) is True for layer in ("landlock", "uid_drop")):
            return  # /proc/<pid>/environ of a same-uid process needs one of them
        # nor through /proc: this test process's environment holds the token
        result = sb.run(f"print(open('/proc/{os.getpid()}/environ').read())")
        assert result.error is not None and "hf_secret" not in result.stdout


# A child made with libc's fork(): no audit event refuses it, so only the kernel (the run's
# pid namespace) can take it down. It ignores SIGTERM and sleeps far beyond the run.
LINGERING_CHILD = (
    "import ctypes, os, signal, time\n"
    "if ctypes.CDLL(None).fork() == 0:\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    time.sleep(300)\n"
    "    os._exit(0)\n"
)


def test_spawned_processes_die_with_the_run(sandbox):
    needs_any(sandbox, "pid_namespace")
    before = {pid: descendants(pid) for pid in sandbox.worker_pids}  # launcher -> zygote
    assert sandbox.run(LINGERING_CHILD + "os.wait()").timed_out  # the parent waits: killed
    assert sandbox.run(LINGERING_CHILD + "print('left it running')").stdout == "left it running\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = {pid: descendants(pid) for pid in sandbox.worker_pids}
        if now == before:
            break
        time.sleep(0.05)
    assert now == before


# --------------------------------------------------------------------------- the pool


def test_run_many_is_parallel_and_keeps_order(sandbox):
    results = sandbox.run_many([f"print({i})" for i in range(10)])
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
    started = time.monotonic()
    slow = sandbox.run_many(["import time\ntime.sleep(1)"] * 2)
    assert all(r.error is None for r in slow)
    assert time.monotonic() - started < 1.9  # both workers slept at the same time


def test_run_is_thread_safe(sandbox):
    outputs: dict[int, str] = {}

    def worker(i: int) -> None:
        outputs[i] = sandbox.run(f"print({i} * {i})").stdout

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == {i: f"{i * i}\n" for i in range(6)}


def test_a_killed_worker_is_replaced(sandbox):
    victim = sandbox.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    results = sandbox.run_many(["print('alive')"] * 4)
    assert [r.stdout for r in results] == ["alive\n"] * 4
    assert victim not in sandbox.worker_pids and len(sandbox.worker_pids) == 2


def test_close_leaves_no_process_behind():
    sb = Sandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=256)
    sb.run(LINGERING_CHILD)
    tree = set(sb.worker_pids) | {p for pid in sb.worker_pids for p in descendants(pid)}
    assert len(tree) >= 2  # the launcher and the zygote
    sb.close()
    assert [pid for pid in tree if Path(f"/proc/{pid}").exists()] == []
    with pytest.raises(RuntimeError, match="closed"):
        sb.run("print(1)")
    sb.close()  # closing twice is fine


def test_a_forgotten_sandbox_cleans_up_when_collected():
    sb = Sandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=256)
    pids = sb.worker_pids
    del sb
    gc.collect()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": 1e9}, "timeout_s"),  # past a day: poll() overflowed, every run failed
        ({"memory_mb": -1}, "memory_mb"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Sandbox(**kwargs)


def test_a_missing_layer_is_a_warning_that_names_it():
    from pipeline.execution.sandbox import _warn_missing

    with pytest.warns(RuntimeWarning, match="'imaginary_layer'"):
        _warn_missing({"imaginary_layer": False, "landlock": True, "uid_drop": "not needed"})


def test_isolation_report_lists_the_layers():
    report = isolation_report()
    for layer in (
        "landlock",
        "user_namespace",
        "pid_namespace",
        "network_namespace",
        "rlimits",
        "uid_drop",
    ):
        assert isinstance(report[layer], (bool, str))
    assert all(isinstance(value, (bool, str)) for value in report.values())


def test_the_view_recreates_the_symlinks_on_the_way_to_a_path(tmp_path):
    from pipeline.execution.isolation import real_path_and_links

    (tmp_path / "real" / "lib").mkdir(parents=True)
    (tmp_path / "real" / "lib" / "mod.py").write_text("")
    (tmp_path / "venv").symlink_to(tmp_path / "real")  # absolute, like a venv's link
    (tmp_path / "lib").symlink_to("venv/lib")  # relative, chained, like /lib -> usr/lib
    links: dict[str, str] = {}
    found = real_path_and_links(f"{tmp_path}/lib/../lib/./mod.py", links)
    assert found == str(tmp_path / "real" / "lib" / "mod.py")
    assert links == {
        str(tmp_path / "lib"): "venv/lib",
        str(tmp_path / "venv"): str(tmp_path / "real"),
    }
    assert real_path_and_links(f"{tmp_path}/lib/missing.py", {}) is None
    (tmp_path / "loop").symlink_to("loop")
    assert real_path_and_links(f"{tmp_path}/loop/x", {}) is None
