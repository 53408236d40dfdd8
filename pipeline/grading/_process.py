"""One grading worker process, talked to over a pipe, killed when a call overruns.

docs/algorithm.md (deviations): math-verify's SIGALRM timeout fails off the main thread, so grading is
bounded from outside instead. :class:`WorkerProcess` starts ``python -m
pipeline.grading._worker`` with ``subprocess`` (not ``multiprocessing``: spawning would re-import the caller's ``__main__``,
perhaps a stage that imports torch) and exchanges one JSON line per request. A reply that does
not arrive within the bound means the worker is stuck in sympy; the caller kills it and starts a
fresh one. Start-up (importing sympy) is waited for separately and never counts against a call.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER_MODULE = "pipeline.grading._worker"
# The folder that holds the `pipeline` package, put first on the worker's import path so the
# worker imports this very checkout whatever the caller's working directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class WorkerStartError(RuntimeError):
    """The worker could not start (math-verify missing, no memory): grading cannot happen."""


class WorkerProcess:
    """A running grading worker; not thread-safe (the caller holds a lock)."""

    def __init__(self, memory_mb: int) -> None:
        # stderr goes to a file, not a pipe: an unread pipe could fill and stall the worker.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(memory_mb)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            close_fds=True,
        )
        self._buffer = b""
        self._ready = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def ask(self, pred: str, truth: str, timeout_s: float, startup_timeout_s: float) -> bool | None:
        """The worker's verdict, or None when it overran ``timeout_s`` or died on this request.

        Raises :class:`WorkerStartError` when a fresh worker never says it is ready.
        """
        if not self._ready:
            if self._read_line(time.monotonic() + startup_timeout_s) is None:
                raise WorkerStartError(self._startup_failure(startup_timeout_s))
            self._ready = True
        request = json.dumps({"pred": pred, "truth": truth}) + "\n"
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(request.encode("utf-8", "surrogatepass"))
            self._process.stdin.flush()
        except (OSError, ValueError):  # the worker died: a broken pipe
            return None
        reply = self._read_line(time.monotonic() + timeout_s)
        if reply is None:
            return None
        try:
            return bool(json.loads(reply)["ok"])
        except (ValueError, KeyError, TypeError):
            return None

    def _startup_failure(self, startup_timeout_s: float) -> str:
        try:  # at EOF the worker has exited or is about to
            code = self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        last = tail.splitlines()[-1] if tail else ""
        if code is None:
            return f"grading worker not ready after {startup_timeout_s:.0f} s"
        return f"grading worker exited with code {code} at start-up: {last or 'no message'}"

    def _read_line(self, deadline: float) -> bytes | None:
        """Next line from the worker, or None at the deadline or at EOF.

        Reads the raw file descriptor: ``select`` on a buffered reader can miss buffered data.
        """
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def kill(self) -> None:
        """Stop the worker now and reap it (SIGKILL: it may be deep inside a C big-int loop)."""
        if self._process.poll() is None:
            self._process.kill()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._process.wait()
        self._stderr.close()

    def abandon(self) -> None:
        """Drop a worker inherited through ``fork``: it belongs to the parent, so leave it be."""
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()
        self._process.returncode = 0  # silence Popen's "still running" warning; not ours to reap
