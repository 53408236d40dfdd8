"""Sandbox: a pool of warm workers that run model-written step code safely and fast.

MCTS executes every candidate step together with its ancestors' code (docs/algorithm.md), so
the pipeline runs step code millions of times, and the code is written by a small model: it
loops forever, allocates terabytes, forks, prints gigabytes, or calls ``os.kill``. A fresh
``python`` per step would cost a second of sympy import each time; instead each worker imports
math, numpy and sympy once and forks a short-lived child per run (a few ms), and that child
confines itself before it runs the code.

Layers, strongest first (details and what each one stops: the sibling module ``isolation``;
process tree: ``sandbox_worker``): a minimal filesystem view per worker (a read-only
root that holds Python, its packages and system libraries and nothing else, so other paths
do not even exist for the code); pid, network, mount and ipc namespaces per run; a
per-run user namespace; uid 65534 when started as root; rlimits on memory, CPU, processes,
file size and open files; no_new_privs and Landlock (reads limited to Python and system
libraries, writes to a private temp folder, no program can be executed, no TCP, signals
scoped to the run); no capabilities; an audit hook that refuses to start processes; a
seccomp filter (``seccomp_filter``: no exec, namespaces, keyrings, SysV IPC,
io_uring, inotify or sockets); a cgroup whose memory and process caps count the whole run
(``cgroups``); a fresh session keyring. The run holds no result pipe, and the
zygote never reads a run's code or output, so no run inherits another's data. The
code sees a small environment (no ``HF_TOKEN``), not the caller's home folder, files or
network. A layer the kernel does not offer is reported by :func:`isolation_report` and
warned about once; the rest still apply.

Every failure of the code comes back as ``ExecResult.error``, the last line of a traceback
(``"ZeroDivisionError: division by zero"``), or ``"TimeoutError: ..."``, ``"SystemExit: 3"``,
``"ProcessExit: exit code 1"``, ``"Killed: signal 9 (SIGKILL)"``, ``"OutputLimitError: ..."``,
``"PermissionError: [Errno 1] step code may not start processes (os.system)"``.
The pool itself survives: a worker that dies is replaced before the next run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pipeline.execution.sandbox_worker import decode_reply, recv_bytes, recv_message, send_message

STARTUP_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine
REPLY_GRACE_S = 10.0  # beyond the run's timeout before the pool gives up on a worker
MAX_TIMEOUT_S = 86400.0  # poll() and select() overflow near 25 days; a step never needs a day
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding `pipeline`
_warned: set[str] = set()


@dataclass(frozen=True)
class ExecResult:
    """What one run of step code produced."""

    stdout: str
    error: str | None = None  # 'Type: message', None when the code ran to its end
    timed_out: bool = False
    duration_s: float = 0.0
    stderr: str = ""
    truncated: bool = False  # stdout or stderr was longer than the 64 KiB handed back

    @property
    def ok(self) -> bool:
        return self.error is None


def _worker_env(base_dir: str) -> dict[str, str]:
    """A small environment: the code sees no tokens or keys from the caller's."""
    python_path = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": base_dir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": python_path,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class _Worker:
    """One worker process and its pipes; ``restart`` replaces a dead or stuck one."""

    def __init__(self, base_dir: str, memory_mb: int, probe: bool = False) -> None:
        config = json.dumps({"base_dir": base_dir, "memory_mb": memory_mb, "probe": probe})
        self._command = [sys.executable, "-m", "pipeline.execution.sandbox_worker", config]
        self._env = _worker_env(base_dir)
        self.layers: dict[str, bool | str] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self._env,
            close_fds=True,
            start_new_session=True,
            bufsize=0,
        )

    def wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        try:
            ready = recv_message(proc.stdout.fileno(), time.monotonic() + STARTUP_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if not ready:
            self.stop()
            raise RuntimeError(
                f"sandbox worker failed to start (exit code {proc.returncode}); see its stderr"
            )
        self.layers = ready["layers"]

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def request(self, code: str, timeout_s: float) -> dict[str, Any] | None:
        """Send one run and wait for its reply; ``None`` when the worker died under it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise BrokenPipeError("worker is not running")  # the caller restarts it
        assert proc.stdin is not None and proc.stdout is not None
        # The code follows its header as raw bytes: the zygote moves them into the run without
        # reading them (no run's data stays in the memory the next run inherits).
        data = code.encode("utf-8", "surrogatepass")
        send_message(proc.stdin.fileno(), {"code_bytes": len(data), "timeout_s": timeout_s})
        _write_all(proc.stdin.fileno(), data)
        deadline = time.monotonic() + timeout_s + REPLY_GRACE_S
        reply_fd = proc.stdout.fileno()
        meta = recv_message(reply_fd, deadline)
        if meta is None:
            return None
        parts = []
        for size in (meta["stdout_bytes"], meta["stderr_bytes"], meta["stderr_tail_bytes"]):
            part = recv_bytes(reply_fd, size, deadline)
            if part is None:
                return None
            parts.append(part)
        return decode_reply(meta, *parts)

    def stop(self, grace_s: float = 2.0) -> None:
        """Close the pipes (the zygote exits), then kill the launcher if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()  # the zygote follows (parent-death signal), and its runs with it
            proc.wait()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _shutdown(workers: list[_Worker], base_dir: str) -> None:
    for worker in workers:
        worker.stop()
    shutil.rmtree(base_dir, ignore_errors=True)


def _make_base_dir() -> str:
    base_dir = tempfile.mkdtemp(prefix="rstar-sandbox-")
    os.chmod(base_dir, 0o755)  # runs drop to 'nobody' when started as root
    return base_dir


def _check_positive(name: str, value: object, integer: bool) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        expected = "a positive integer" if integer else "a positive number"
        raise ValueError(f"Sandbox: {name} must be {expected}, got {value!r}")


def _check_timeout(value: object) -> float:
    _check_positive("timeout_s", value, integer=False)
    if value > MAX_TIMEOUT_S:  # type: ignore[operator]
        raise ValueError(f"Sandbox: timeout_s must be at most {MAX_TIMEOUT_S:g} s, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _warn_missing(layers: dict[str, bool | str]) -> None:
    for name, status in layers.items():
        if status is False and name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"sandbox isolation layer {name!r} is not available here; step code runs "
                "without it (`rstar doctor` shows all layers)",
                RuntimeWarning,
                stacklevel=3,
            )


class Sandbox:
    """A pool of warm, isolated Python workers; use as a context manager.

    ``memory_mb`` is what the step code may allocate on top of the warm interpreter;
    ``timeout_s`` is wall-clock time per run. ``run`` is thread-safe; ``run_many`` keeps every
    worker busy and returns results in input order.
    """

    def __init__(
        self, workers: int | None = None, timeout_s: float = 10.0, memory_mb: int = 1024
    ) -> None:
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        _check_positive("workers", workers, integer=True)
        _check_positive("memory_mb", memory_mb, integer=True)
        self.workers, self.timeout_s, self.memory_mb = workers, _check_timeout(timeout_s), memory_mb
        self._base_dir = _make_base_dir()
        self._pool = [_Worker(self._base_dir, memory_mb) for _ in range(workers)]
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self._base_dir)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        try:
            for worker in self._pool:  # start all first: they import sympy in parallel
                worker.start()
            for worker in self._pool:
                worker.wait_ready()
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        self.isolation: dict[str, bool | str] = dict(self._pool[0].layers)
        _warn_missing(self.isolation)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (killing one is survivable: it is replaced)."""
        return [w.pid for w in self._pool if w.pid is not None]

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run one program in a fresh namespace on a free worker (blocks until one is free)."""
        if not isinstance(code, str):
            raise TypeError(f"Sandbox.run: code must be a str, got {type(code).__name__}")
        timeout_s = self.timeout_s if timeout_s is None else _check_timeout(timeout_s)
        worker = self._take_worker()
        try:
            return self._run_on(worker, code, timeout_s)
        finally:
            self._idle.put(worker)

    def run_many(self, codes: Sequence[str]) -> list[ExecResult]:
        """Run programs in parallel over all workers; results in input order."""
        codes = list(codes)
        if not codes:
            return []
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        return list(self._executor.map(self.run, codes))

    def _take_worker(self) -> _Worker:
        while True:
            if self._closed:
                raise RuntimeError("Sandbox is closed")
            try:
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                continue

    def _run_on(self, worker: _Worker, code: str, timeout_s: float) -> ExecResult:
        """One run; a worker found dead (before or during it) is replaced and the run retried
        once: runs are pure computations, so running one again is harmless."""
        for _attempt in range(2):
            started = time.monotonic()
            try:
                reply = worker.request(code, timeout_s)
            except (BrokenPipeError, ConnectionError):
                reply = None
            except BaseException as exc:  # e.g. Ctrl-C: a reply may still be in flight
                if not isinstance(exc, TimeoutError):
                    worker.stop()  # the next run finds it stopped and starts a fresh one
                    raise  # the worker stopped answering: replace it
                self._replace(worker)
                return ExecResult(
                    "",
                    f"TimeoutError: step code ran longer than {timeout_s:g} s",
                    timed_out=True,
                    duration_s=time.monotonic() - started,
                )
            if reply is not None:
                return ExecResult(
                    stdout=reply["stdout"],
                    error=reply["error"],
                    timed_out=reply["timed_out"],
                    duration_s=time.monotonic() - started,
                    stderr=reply["stderr"],
                    truncated=reply["truncated"],
                )
            if self._closed:
                raise RuntimeError("Sandbox is closed")
            self._replace(worker)
        return ExecResult(
            "",
            "SandboxError: the worker died during the run, twice",
            duration_s=time.monotonic() - started,
        )

    def _replace(self, worker: _Worker) -> None:
        if self._closed:
            worker.stop()
        else:
            worker.restart()

    def close(self) -> None:
        """Stop every worker and remove the temp folder; idempotent."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@lru_cache(maxsize=1)
def _probe() -> tuple[tuple[str, bool | str], ...]:
    base_dir = _make_base_dir()
    worker = _Worker(base_dir, memory_mb=256, probe=True)
    try:
        worker.start()
        worker.wait_ready()
        return tuple(worker.layers.items())
    finally:
        _shutdown([worker], base_dir)


def isolation_report() -> dict[str, bool | str]:
    """Which isolation layers a run gets on this machine (``True``, ``False`` or a note).

    Measured by starting one worker and confining one empty run, so it reports what is
    active, not what the kernel advertises. Cached for the process.
    """
    report: dict[str, bool | str] = {"kernel": platform.release()}
    try:
        report.update(_probe())
    except (OSError, RuntimeError) as error:
        report["error"] = str(error)
    return report
