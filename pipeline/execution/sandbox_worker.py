"""The sandbox worker: a warm zygote that forks one confined child per step-code run.

Process tree of one worker (``python -m pipeline.execution.sandbox_worker CONFIG``)::

    launcher   the process the Sandbox started; waits and mirrors the zygote's exit
    └─ zygote  pid 1 of its own pid namespace; math/numpy/sympy imported once; then moves into
       │       its filesystem view (a mount namespace whose root holds only what runs may
       │       read, see isolation.enter_view), once; serves requests
       └─ run  forked per request, pid 1 of a fresh pid namespace; confines itself
               (pipeline.execution.isolation), runs the code, reports, exits

The launcher exists because a pid namespace applies to the children of the process that
creates it. When the launcher dies the zygote gets SIGKILL (parent-death signal), and when a
pid namespace's first process dies the kernel kills everything inside it; so killing the
worker from outside, or a timed-out run, leaves no process behind.

Messages between the Sandbox and the zygote are 4-byte big-endian lengths followed by JSON, on
the worker's stdin and stdout (moved to private descriptors at start).
"""

from __future__ import annotations

import _posixsubprocess
import atexit
import builtins
import errno
import json
import os
import select
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import pipeline
from pipeline.execution import cgroups, isolation, seccomp_filter

STDOUT_LIMIT = 64 * 1024  # bytes of stdout/stderr handed back per run
FILE_LIMIT = 1024 * 1024  # RLIMIT_FSIZE: caps captured output and any file the code writes
TMPFS_MB = 64  # size of the private temp folder when a mount namespace is available
MAX_PROCESSES = 64  # per run, when a per-run user namespace keeps the count local
ERROR_LIMIT = 300  # characters of the 'Type: message' error line
ERROR_TAIL = 4 * ERROR_LIMIT + 8  # bytes at the end of stderr that hold the error line
EXIT_RAISED = 1  # a run that ends with an error wrote it as the last line of its stderr
EXIT_UNREPORTED = 2  # ...but found no handle on its stderr left to write it to
# cgroup allowance beyond memory_mb for the warm zygote's pages a run touches and so copies
# (measured 1 to 12 MB for sympy and numpy steps); the zygote's own pages are not charged.
COPY_ON_WRITE_MB = 32

_HEADER = struct.Struct(">I")
_RUN_NAMESPACES = isolation.CLONE_NEWNET | isolation.CLONE_NEWIPC | isolation.CLONE_NEWNS


# --------------------------------------------------------------------------- protocol


def send_message(fd: int, message: dict[str, Any]) -> None:
    """Write one framed JSON message; a vanished reader raises ``BrokenPipeError``."""
    data = json.dumps(message).encode()
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("no answer from the sandbox worker")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_message(fd: int, deadline: float | None = None) -> dict[str, Any] | None:
    """Read one framed JSON message; ``None`` when the other side has gone (EOF)."""
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0], deadline)
    return None if body is None else json.loads(body)


def recv_bytes(fd: int, size: int, deadline: float | None = None) -> bytes | None:
    """The raw bytes that follow a message (a run's code, or its output)."""
    return _read_exact(fd, size, deadline) if size else b""


def _splice_into(source_fd: int, target_fd: int, size: int) -> None:
    """Move ``size`` bytes from a pipe into a file inside the kernel: the zygote never holds a
    run's code or output in its own memory, which every later run inherits."""
    while size:
        moved = os.splice(source_fd, target_fd, size)
        if moved == 0:
            raise EOFError("the sandbox went away mid-request")
        size -= moved


def _send_file(target_fd: int, source_fd: int, offset: int, size: int) -> None:
    while size:
        sent = os.sendfile(target_fd, source_fd, offset, size)
        if sent == 0:
            raise BrokenPipeError("short output file")
        offset, size = offset + sent, size - sent


# --------------------------------------------------------------------------- the run child


def describe_error(exc: BaseException) -> str:
    """The last line of the traceback (``Type: message``), capped to stay a short observation."""
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return f"OutputLimitError: output or a file grew past {FILE_LIMIT} bytes"
    try:
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    except BaseException:  # noqa: BLE001 - a hostile __str__ may raise anything
        line = f"{type(exc).__name__}: <unprintable>"
    return line if len(line) <= ERROR_LIMIT else line[: ERROR_LIMIT - 3] + "..."


@dataclass
class Plan:
    """What each run applies; the startup probe turns 'try' into 'must' for what worked."""

    run_pid_namespace: bool = True
    run_namespaces: bool = True  # network, ipc, mount (+ private tmpfs)
    user_namespace: bool = True
    landlock_abi: int = 0
    drop_uid: bool = False  # we are root and uid 65534 exists in our user namespace
    keep_read_search: bool = False  # ...and Python lives where 'nobody' cannot read
    readable: tuple[str, ...] = ()  # what Landlock lets the code read (readable_paths)
    seccomp_program: bytes | None = (
        None  # compiled once per worker (pipeline.execution.seccomp_filter)
    )
    cgroup: cgroups.RunCgroup | None = None  # this worker's run cgroup (pipeline.execution.cgroups)
    # Where the view mounts the cgroup's folders; a run unmounts them once it has joined.
    cgroup_places: tuple[str, ...] = ()
    required: set[str] = field(default_factory=set)
    # Counted by the zygote before each fork, where RLIMIT_NPROC has to leave room for them.
    uid_processes: int | None = None


class SetupError(Exception):
    """A layer the probe found working failed for this run: refuse to run the code."""


def _process_count(uid: int, proc_fd: int | None = None) -> int:
    """Processes of ``uid`` on the machine, through the host's /proc (``proc_fd``, a handle the
    zygote took before its filesystem view hid it) or else through ``/proc``."""
    count = 0
    for name in os.listdir("/proc" if proc_fd is None else proc_fd):
        if not name.isdigit():
            continue
        try:
            path = f"/proc/{name}" if proc_fd is None else name
            count += os.stat(path, dir_fd=proc_fd).st_uid == uid
        except OSError:
            pass
    return count


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def confine(plan: Plan, run_dir: str, memory_mb: int, timeout_s: float) -> dict[str, bool]:
    """Apply every layer of the plan to this process, strongest-first; see isolation."""
    layers: dict[str, bool] = {}
    drop = plan.drop_uid

    def attempt(name: str, action) -> bool:
        try:
            action()
        except OSError as exc:
            layers[name] = False
            if name in plan.required:
                raise SetupError(f"{name} failed: {exc}") from None
            return False
        layers[name] = True
        return True

    def tmpfs() -> None:
        owner = isolation.NOBODY if drop else os.geteuid()
        group = isolation.NOBODY if drop else os.getegid()
        isolation.mount_private_tmpfs(run_dir, TMPFS_MB, owner, group)

    if plan.run_namespaces and attempt(
        "network_namespace", lambda: isolation.unshare(_RUN_NAMESPACES)
    ):
        attempt("mount_namespace", tmpfs)
    # While still root: a cgroup's folder is root's, and only root may move us into it.
    in_cgroup = plan.cgroup is not None and attempt("cgroup", plan.cgroup.join)
    if plan.cgroup_places and layers.get("mount_namespace"):  # our own copy of the view
        for place in plan.cgroup_places:  # the code needs no way back to its cgroup's files
            isolation.detach(place)
    if drop:
        attempt("uid_drop", lambda: isolation.drop_to_nobody(plan.keep_read_search))
        if os.geteuid() == 0:  # never run model code as root when we could avoid it
            raise SetupError("uid_drop failed: still root")
        if plan.user_namespace:
            isolation.set_dumpable()  # so that /proc/self/*_map stays writable by us
        isolation.set_parent_death_signal()  # the uid change cleared it

    def user_namespace() -> None:
        uid, gid = os.geteuid(), os.getegid()
        isolation.unshare(isolation.CLONE_NEWUSER)
        isolation.write_id_maps(uid, gid)

    per_run_userns = plan.user_namespace and attempt("user_namespace", user_namespace)
    if not plan.keep_read_search:
        attempt("capabilities_dropped", isolation.drop_capabilities)
    attempt("session_keyring", isolation.join_fresh_session_keyring)
    processes: int | None = MAX_PROCESSES
    if in_cgroup:  # pids.max counts this run alone; RLIMIT_NPROC would count every worker's
        processes = None
    elif not per_run_userns:  # the count is per uid across the machine: leave room
        known = plan.uid_processes
        processes += _process_count(os.geteuid()) if known is None else known
    limits = isolation.Limits(
        address_space_bytes=_address_space_bytes() + memory_mb * 1024 * 1024,
        cpu_seconds=int(timeout_s) + 2,
        processes=processes,
        file_bytes=FILE_LIMIT,
    )
    attempt("rlimits", lambda: isolation.set_rlimits(limits))
    if attempt("no_new_privs", isolation.set_no_new_privs) and plan.landlock_abi:
        try:
            layers.update(isolation.apply_landlock(run_dir, plan.landlock_abi, plan.readable))
            layers["landlock"] = True
        except OSError as exc:
            layers["landlock"] = False
            if "landlock" in plan.required:
                raise SetupError(f"landlock failed: {exc}") from None
    if plan.seccomp_program is not None:  # last: the steps above need calls it refuses
        attempt("seccomp", lambda: seccomp_filter.install(plan.seccomp_program))
    return layers


def _redirect(out_fd: int, err_fd: int) -> None:
    """fd 0 = /dev/null, 1 and 2 = the capture memfds; close every other descriptor.

    There is no result pipe: the run reports through its exit status and the last line of
    its stderr (:func:`_exit_with_error`), so no descriptor lets step code write a result.
    """
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    # A second handle on the stderr capture, so that code closing fd 2 cannot silence its
    # error line; it reaches nothing the code could not already write through fd 2.
    os.dup2(err_fd, _ERROR_FD)
    os.closerange(3, _ERROR_FD)
    os.closerange(_ERROR_FD + 1, os.sysconf("SC_OPEN_MAX"))


_ERROR_FD = 200  # below the run's RLIMIT_NOFILE (256)
# Taken before any step code runs: the code may replace os._exit (and it does: see execute).
_real_exit = os._exit


def _exit_with_error(line: str) -> None:
    """End the run as failed: the error line goes last on stderr, the status is EXIT_RAISED
    (EXIT_UNREPORTED when the code closed every handle on its stderr)."""
    flat = line.replace("\n", " ")[:ERROR_LIMIT]
    data = ("\n" + flat + "\n").encode("utf-8", "backslashreplace")
    try:  # threads the code left running write on through fd 2: into /dev/null from now on,
        # so that none of it lands after the line (the Sandbox reads it off the end)
        os.fstat(_ERROR_FD)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    except BaseException:  # noqa: BLE001 - no second handle: the line goes through fd 2
        pass
    for fd in (_ERROR_FD, 2):
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end > FILE_LIMIT - ERROR_TAIL:  # stderr is full: make room for the line
                os.ftruncate(fd, FILE_LIMIT - ERROR_TAIL)
                end = FILE_LIMIT - ERROR_TAIL
            os.pwrite(fd, data, end)
            _real_exit(EXIT_RAISED)
        except BaseException:  # noqa: BLE001 - closed or replaced by the code: try the next
            continue
    _real_exit(EXIT_UNREPORTED)


def error_from_stderr(tail: bytes) -> tuple[str, int]:
    """The error line a run wrote last on stderr, and how many bytes it took there."""
    body = tail[:-1] if tail.endswith(b"\n") else tail
    start = body.rfind(b"\n")
    line = body[start + 1 :]
    return line.decode("utf-8", "replace") or "ProcessExit: exit code 1", len(line) + 2


# Audit events of everything that starts a process or a program. multiprocessing's 'spawn'
# and 'forkserver' go through _posixsubprocess without an event; Landlock's execute denial
# stops those (isolation.apply_landlock).
_PROCESS_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn"}
    | {"subprocess.Popen", "pty.spawn"}
)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: refuse, with a clear error, what step code has no business doing.

    Not a boundary (ctypes can bypass it): the pid namespace, rlimits and Landlock are. It
    turns ``os.system('rm -rf ~')``, a fork bomb or ``kill(0 | -1 | -pgid)`` into a recorded
    error (docs/algorithm.md: a failed step is penalised) rather than a run that 'worked'
    (``os.system`` only returns an exit status) or one that hits the process limit late.
    """
    if event in _PROCESS_EVENTS:
        raise PermissionError(errno.EPERM, f"step code may not start processes ({event})")
    if event in ("os.kill", "os.killpg") and isinstance(args[0], int) and args[0] <= 0:
        raise PermissionError(errno.EPERM, "the sandbox refuses signals to process groups")
    if event in ("os.kill", "os.killpg", "signal.pthread_kill") and _kills_this_init(event, args):
        _die_of_signal(signal.SIGKILL)


# A run is pid 1 of its own pid namespace, and the kernel drops a signal left at its default
# action when it reaches that pid 1 from inside the namespace: code that sent itself SIGTERM,
# raised SIGUSR1 or let an alarm() go off used to run on and end cleanly. These signals (their
# default is to end the process; faults such as SIGSEGV excepted, which the kernel forces) get
# a handler that ends the run as the signal would end any other process; SIGKILL, which takes
# no handler, is caught by the audit hook on its way out (os.kill, os.killpg, pthread_kill).
_ENDING_SIGNALS = tuple(
    number
    for name in ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGTERM", "SIGSTKFLT")
    + ("SIGXCPU", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR")
    if (number := getattr(signal, name, None)) is not None
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def _die_of_signal(number: int, _frame: object = None) -> None:
    """End this process as ``number`` would: in words when it is the run's pid 1, for real in a
    process the code forked (it is no pid 1)."""
    if os.getpid() == 1:
        _exit_with_error(_killed_by(number))
    signal.signal(number, signal.SIG_DFL)
    signal.pthread_kill(threading.get_ident(), number)


def _kills_this_init(event: str, args: tuple[Any, ...]) -> bool:
    """Whether the code, as the run's pid 1, sends itself SIGKILL (os.kill, os.killpg, or
    pthread_kill, whose target is always a thread of this process)."""
    if os.getpid() != 1 or args[1] != signal.SIGKILL:
        return False
    return event == "signal.pthread_kill" or args[0] == (1 if event == "os.kill" else os.getpgrp())


def _refuse_fork_exec(*_args: object, **_kwargs: object) -> None:
    """Stands in for ``_posixsubprocess.fork_exec``: multiprocessing's 'spawn' calls it with
    no audit event and ignores the exec failure, so the run ended cleanly without its process."""
    raise PermissionError(errno.EPERM, "step code may not start processes (_posixsubprocess)")


def execute(code: str) -> str | None:
    """Run the code in a fresh ``__main__`` namespace; the error line or ``None``."""
    me = os.getpid()
    # Line-buffered, so a run that is killed keeps what it printed before; the streams live
    # as long as the process, hence no context managers.
    text: dict[str, Any] = {
        "encoding": "utf-8",
        "errors": "backslashreplace",
        "closefd": False,
        "buffering": 1,
    }
    sys.stdout = sys.__stdout__ = open(1, "w", **text)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", **text)  # noqa: SIM115
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    streams = (sys.stdout, sys.stderr)

    def exit_now(status: int) -> None:
        # Reported as an error, never as a clean finish; a process the code forked just exits.
        if os.getpid() == me:
            _exit_with_error(f"ProcessExit: exit code {int(status)}")
        _real_exit(status)

    os._exit = exit_now
    _posixsubprocess.fork_exec = _refuse_fork_exec
    sys.addaudithook(_audit)
    atexit._clear()  # the zygote's handlers (logging's...): never the run's to call
    if me == 1:
        for number in _ENDING_SIGNALS:
            if signal.getsignal(number) == signal.SIG_DFL:
                signal.signal(number, _die_of_signal)
    error = None
    try:
        program = compile(code, "<step>", "exec")
        exec(program, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 - the job
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: leaving early is an error
        if os.getpid() != me:  # a process the code forked: never report for it
            os._exit(1)
        error = describe_error(exc)
    if os.getpid() != me:
        os._exit(0)
    try:  # what python does before it exits: join non-daemon threads, then atexit handlers
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt while joining
        error = error or describe_error(exc)
    for stream in streams:
        try:
            stream.flush()
        except BaseException as exc:  # noqa: BLE001 - e.g. the output limit
            error = error or describe_error(exc)
    return error


def _read_file(fd: int) -> bytes:
    size, chunks, offset = os.fstat(fd).st_size, [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def child_main(
    plan: Plan,
    run_dir: str,
    fds: tuple[int, int, int],
    memory_mb: int,
    timeout_s: float,
    report_layers: bool,
) -> None:
    """The forked run process: confine, execute, exit 0 or :func:`_exit_with_error`.

    ``fds`` are the stdout and stderr memfds and the memfd holding the code. With
    ``report_layers`` (the startup probe, code ``pass``) the layers go to stdout as JSON.
    """
    out_fd, err_fd, code_fd = fds
    try:
        isolation.set_parent_death_signal()
        os.setsid()  # own process group: the fallback cleanup kills it as a whole
        code = _read_file(code_fd).decode("utf-8", "surrogatepass")
        _redirect(out_fd, err_fd)
        layers = confine(plan, run_dir, memory_mb, timeout_s)
        os.chdir(run_dir)
        os.environ.update(HOME=run_dir, TMPDIR=run_dir)
        tempfile.tempdir = run_dir
        if report_layers:
            os.write(1, json.dumps(layers).encode())
        error = execute(code)
    except SetupError as exc:
        error = f"SandboxError: {exc}"
    except BaseException as exc:  # noqa: BLE001 - whatever happens, report and exit
        error = "SandboxError: " + describe_error(exc)
    if error is None:
        _real_exit(0)
    _exit_with_error(error)


# --------------------------------------------------------------------------- the zygote


_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def _killed_by(number: int) -> str:
    """The error line of a run that signal ``number`` ended."""
    return f"Killed: signal {number} ({_SIGNAL_NAMES.get(number, '?')})"


def _status_error(status: int) -> str:
    if os.WIFSIGNALED(status):
        return _killed_by(os.WTERMSIG(status))
    return f"ProcessExit: exit code {os.waitstatus_to_exitcode(status)}"


class Zygote:
    """Forks, times and collects one confined child per request."""

    REPORTED = (
        "user_namespace",
        "pid_namespace",
        "network_namespace",
        "mount_namespace",
        "cgroup",
        "uid_drop",
        "capabilities_dropped",
        "session_keyring",
        "rlimits",
        "no_new_privs",
        "landlock",
        "landlock_filesystem",
        "landlock_network",
        "landlock_signal_scope",
        "seccomp",
    )

    def __init__(
        self,
        base_dir: str,
        memory_mb: int,
        worker_namespaces: bool,
        cgroup: cgroups.RunCgroup | None = None,
        cgroup_note: str = "",
    ) -> None:
        self.base_dir = base_dir
        self.memory_mb = memory_mb
        self.plan = Plan(landlock_abi=isolation.landlock_abi(), readable=readable_paths())
        self.plan.cgroup = cgroup
        seccomp_note = ""
        try:  # before the view: loading libseccomp looks through the host's library folders
            self.plan.seccomp_program = seccomp_filter.compile_filter()
        except OSError as exc:
            seccomp_note = str(exc)
        # The host's /proc, for _process_count once the view has replaced it with our own.
        self._host_proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        view_note = "needs the worker's own pid namespace"
        if worker_namespaces:
            view_note = self._enter_view()
        self._own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:  # can we give each run its own pid namespace and come back?
            isolation.unshare(isolation.CLONE_NEWPID)
            isolation.setns(self._own_pid_ns, isolation.CLONE_NEWPID)
        except OSError:
            self.plan.run_pid_namespace = False
        self.plan.drop_uid = os.geteuid() == 0 and _uid_is_mapped(isolation.NOBODY)
        if self.plan.drop_uid and not all(map(isolation.readable_by_others, _python_paths())):
            self.plan.keep_read_search = True
            self.plan.user_namespace = False  # entering one would drop that capability
        self.layers: dict[str, bool | str] = {
            "worker_pid_namespace": worker_namespaces,
            "pid_namespace": self.plan.run_pid_namespace,
            "filesystem_view": not view_note,
        }
        self._notes = {"seccomp": seccomp_note, "cgroup": cgroup_note, "filesystem_view": view_note}

    def _enter_view(self) -> str:
        """Move this zygote, and so every run it forks, into the minimal filesystem view; ''
        when done, else why not (the runs then see the host's tree, Landlock still limits
        what they open). Once per worker: a run only copies the view (its mount namespace)."""
        cgroup = self.plan.cgroup
        writable, places = [], []
        if cgroup is not None:
            for index, folder in enumerate(cgroup.folders):
                places.append(f"{VIEW_CGROUP}/{index}")
                writable.append((folder, places[-1]))
        view = isolation.View(
            read_only=_readable_sources(include_devices=False),
            devices=VIEW_DEVICES,
            writable=tuple(writable),
            scratch=VIEW_SCRATCH,
            scratch_mb=TMPFS_MB,
        )
        try:
            staging = tempfile.mkdtemp(prefix="view-", dir=self.base_dir)
            isolation.enter_view(view, staging)
        except OSError as exc:
            return str(exc)
        self.base_dir = VIEW_SCRATCH
        if cgroup is not None:  # the same cgroup, reached through the view's mounts
            rebased = dict(zip(cgroup.folders, places, strict=True))
            self.plan.cgroup = cgroups.RunCgroup(
                cgroup.version, rebased[cgroup.memory_dir], rebased[cgroup.pids_dir]
            )
            self.plan.cgroup_places = tuple(places)
        return ""

    def probe(self) -> dict[str, bool | str]:
        """Try every layer once; from now on the ones that worked are required in every run."""
        result = self.collect(*self.start("pass", 5.0, report_layers=True))
        meta, out_fd, err_fd = result
        try:
            found = json.loads(_read_file(out_fd) or b"{}")
        except ValueError:
            found = {}
        finally:
            os.close(out_fd)
            os.close(err_fd)
        self.plan.run_namespaces = bool(found.get("network_namespace"))
        self.plan.user_namespace = bool(found.get("user_namespace"))
        self.plan.required = {name for name, ok in found.items() if ok is True}
        for name in self.REPORTED:
            self.layers.setdefault(name, bool(found.get(name, False)))
        self.layers["ipc_namespace"] = self.layers["network_namespace"]
        if os.geteuid() != 0:
            self.layers["uid_drop"] = "not needed (not root)"
        elif not self.plan.drop_uid:  # root of a user namespace that has no uid 65534
            self.layers["uid_drop"] = False
        if self.plan.keep_read_search:
            note = "Python lives in a folder only root can read (and no filesystem view)"
            self.layers["user_namespace"] = f"not used: {note}"
            self.layers["capabilities_dropped"] = f"all but CAP_DAC_READ_SEARCH: {note}"
        self.layers["audit_hook"] = True  # installed by every run (execute)
        if self.layers["cgroup"] is True and self.plan.cgroup is not None:
            self.layers["cgroup_version"] = str(self.plan.cgroup.version)
        for name, note in self._notes.items():
            if note and self.layers.get(name) is False:
                self.layers[f"{name}_unavailable"] = note
        self.layers["landlock_abi"] = str(self.plan.landlock_abi)
        if meta.get("error"):
            self.layers["probe_error"] = meta["error"]
        return self.layers

    def _fork(self) -> int:
        """Fork the run; it is pid 1 of a new pid namespace when the plan has one."""
        fresh = self.plan.run_pid_namespace
        if fresh:
            isolation.unshare(isolation.CLONE_NEWPID)  # applies to the next child only...
        try:
            pid = os.fork()
        except BaseException:
            if fresh:
                isolation.setns(self._own_pid_ns, isolation.CLONE_NEWPID)
            raise
        if pid != 0 and fresh:  # ...so step back for the next run's fresh one
            isolation.setns(self._own_pid_ns, isolation.CLONE_NEWPID)
        return pid

    def start(
        self, code: str | int, timeout_s: float, report_layers: bool = False
    ) -> tuple[int, str, int, int, float, float]:
        """Fork one run. ``code`` is source text (the probe) or a memfd already holding it."""
        if isinstance(code, str):
            code_fd = os.memfd_create("code")
            os.write(code_fd, code.encode())
        else:
            code_fd = code
        run_dir = tempfile.mkdtemp(prefix="run-", dir=self.base_dir)
        if self.plan.drop_uid:  # the child drops to nobody before it writes here
            os.chown(run_dir, isolation.NOBODY, isolation.NOBODY)
        out_fd, err_fd = os.memfd_create("stdout"), os.memfd_create("stderr")
        if self.plan.cgroup is None and not self.plan.user_namespace:  # a per-uid count
            uid = isolation.NOBODY if self.plan.drop_uid else os.geteuid()
            self.plan.uid_processes = _process_count(uid, self._host_proc)
        started = time.monotonic()
        try:
            pid = self._fork()
        except BaseException:
            for fd in (out_fd, err_fd, code_fd):
                os.close(fd)
            _remove_tree(run_dir)
            raise
        if pid == 0:
            child_main(
                self.plan,
                run_dir,
                (out_fd, err_fd, code_fd),
                self.memory_mb,
                timeout_s,
                report_layers,
            )
        os.close(code_fd)
        return pid, run_dir, out_fd, err_fd, started, timeout_s

    def collect(
        self, pid: int, run_dir: str, out_fd: int, err_fd: int, started: float, timeout_s: float
    ) -> tuple[dict[str, Any], int, int]:
        """Wait for the run; the reply's header and the two output memfds (caller closes)."""
        oom_before = self.plan.cgroup.oom_kills() if self.plan.cgroup else 0
        try:
            status, timed_out = self._wait(pid, started + timeout_s)
            if not self.plan.run_pid_namespace:  # nothing takes its helpers down: do it
                _kill_group(pid)
                if self.plan.cgroup is not None:
                    self.plan.cgroup.kill_all()
        finally:
            _reap_orphans()
            _remove_tree(run_dir)
        oom = self.plan.cgroup is not None and self.plan.cgroup.oom_kills() > oom_before
        meta = self._verdict(status, timed_out, timeout_s, oom, out_fd, err_fd)
        meta["duration_s"] = time.monotonic() - started
        return meta, out_fd, err_fd

    def _wait(self, pid: int, deadline: float) -> tuple[int, bool]:
        pidfd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    os.kill(pid, signal.SIGKILL)  # pid 1 of its namespace: takes all with it
                    _kill_group(pid)
                    return os.waitpid(pid, 0)[1], True
                if poller.poll(remaining * 1000):
                    return os.waitpid(pid, 0)[1], False
        finally:
            os.close(pidfd)

    def _verdict(
        self, status: int, timed_out: bool, timeout_s: float, oom: bool, out_fd: int, err_fd: int
    ) -> dict[str, Any]:
        """What the zygote knows from the kernel: the exit status and the output sizes. It
        never reads the output itself (see _splice_into)."""
        stdout_size, stderr_size = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
        raised = os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_RAISED
        error = None
        if timed_out:
            error = f"TimeoutError: step code ran longer than {timeout_s:g} s"
        elif oom and os.WIFSIGNALED(status):
            error = f"MemoryError: the run went past its memory limit ({self.memory_mb} MB)"
        elif raised and stderr_size:
            pass  # the line is the end of stderr; the Sandbox reads it (error_from_stderr)
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_UNREPORTED:
            error = "SandboxError: the step failed after closing its stderr; its error is lost"
        elif status != 0:
            error = _status_error(status)
        return {
            "error": error,
            "error_in_stderr": error is None and raised and stderr_size > 0,
            "timed_out": timed_out,
            "stdout_bytes": min(stdout_size, STDOUT_LIMIT + 1),
            "stderr_bytes": min(stderr_size, STDOUT_LIMIT + ERROR_TAIL),
            "stderr_size": stderr_size,
            "stderr_tail_bytes": min(stderr_size, ERROR_TAIL),
        }


def send_reply(fd: int, meta: dict[str, Any], out_fd: int, err_fd: int) -> None:
    """Header, then stdout's head, stderr's head and stderr's tail, copied by the kernel."""
    send_message(fd, meta)
    _send_file(fd, out_fd, 0, meta["stdout_bytes"])
    _send_file(fd, err_fd, 0, meta["stderr_bytes"])
    tail = meta["stderr_tail_bytes"]
    _send_file(fd, err_fd, meta["stderr_size"] - tail, tail)


def decode_reply(meta: dict[str, Any], stdout: bytes, stderr: bytes, tail: bytes) -> dict:
    """The run's result from a reply: the error line comes off the end of stderr."""
    error, stderr_size = meta["error"], meta["stderr_size"]
    if meta["error_in_stderr"]:
        error, used = error_from_stderr(tail)
        stderr_size -= used
        stderr = stderr[: max(stderr_size, 0)]
    text = {"encoding": "utf-8", "errors": "replace"}
    return {
        "stdout": stdout[:STDOUT_LIMIT].decode(**text),
        "stderr": stderr[:STDOUT_LIMIT].decode(**text),
        "error": error,
        "timed_out": meta["timed_out"],
        "truncated": len(stdout) > STDOUT_LIMIT or stderr_size > STDOUT_LIMIT,
    }


def _uid_is_mapped(uid: int) -> bool:
    """Whether ``uid`` exists in our user namespace (not so in some rootless containers)."""
    with open("/proc/self/uid_map") as uid_map:
        for line in uid_map:
            inside, _, count = (int(field) for field in line.split())
            if inside <= uid < inside + count:
                return True
    return False


# The `pipeline` package, which a run itself is made of; the folder above it is the repository.
_PIPELINE = os.path.dirname(os.path.abspath(pipeline.__file__))


def _python_paths() -> list[str]:
    """What a run must be able to read: the interpreter, stdlib, site-packages, pipeline."""
    from importlib.util import find_spec

    paths = [
        os.path.realpath(sys.executable),
        os.path.dirname(os.__file__),
        os.path.dirname(_PIPELINE),
    ]
    for name in ("numpy", "sympy", "mpmath"):
        spec = find_spec(name)
        if spec is not None and spec.origin:
            paths.append(os.path.dirname(os.path.dirname(spec.origin)))
    return paths


# Read-only for step code besides Python itself: system libraries (numpy's and sqlite's
# shared objects and their dependencies), the loader's cache and a few harmless devices.
_SYSTEM_READABLE = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
_SYSTEM_READABLE += ("/etc/ld.so.cache", "/etc/localtime")
_DEVICES = ("/dev/zero", "/dev/urandom")
# The filesystem view (isolation.enter_view): what it holds besides the readable paths, where
# it puts the zygote's scratch folder (run folders are made there) and the cgroup's folders.
VIEW_DEVICES = ("/dev/null", *_DEVICES)
VIEW_SCRATCH = "/tmp"
VIEW_CGROUP = "/.cgroup"


def _readable_sources(include_devices: bool = True) -> list[str]:
    """The paths behind :func:`readable_paths` as Python names them (symlinks unresolved)."""
    import site

    interpreter, stdlib, _repository, *packages = _python_paths()
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    python += [sys.executable, os.path.dirname(interpreter), stdlib, *packages]
    python += site.getsitepackages()
    python.append(_PIPELINE)
    return [*python, *_SYSTEM_READABLE, *(_DEVICES if include_devices else ())]


def readable_paths() -> tuple[str, ...]:
    """What a run may read: the interpreter and its packages, system libraries, and no more.

    Not the caller's home folder, ``/tmp``, ``/etc`` or ``/proc``: they hold tokens and keys
    that model-written code must never see. Not the repository either (data, configs), only
    the ``pipeline`` package that a run itself is made of. The filesystem view holds the
    same paths, so what Landlock lets a run read is what the view shows it.
    """
    found: dict[str, None] = {}
    for path in _readable_sources():
        real = os.path.realpath(path)
        if os.path.exists(real):
            found.setdefault(real)
    return tuple(found)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _reap_orphans() -> None:
    """Without a run pid namespace, helpers the code left behind end up as our zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _remove_tree(path: str) -> None:
    """Remove a run folder; the code may have left read-only folders in it."""
    for parent, dirs, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(parent, name))
            except OSError:
                pass
        for name in dirs:
            try:
                os.chmod(os.path.join(parent, name), 0o700)
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- startup


def _enter_worker_namespaces(
    channels: tuple[int, int], cgroup: cgroups.RunCgroup | None = None
) -> bool:
    """Become pid 1 of a new pid namespace (in a user namespace when not root).

    The launcher forks the zygote into the namespace and stays behind to mirror its exit; it
    returns only in the zygote. ``False`` (and no fork) when the kernel refuses.
    """
    root = os.geteuid() == 0
    uid, gid = os.geteuid(), os.getegid()
    try:
        isolation.unshare(isolation.CLONE_NEWPID | (0 if root else isolation.CLONE_NEWUSER))
        if not root:
            isolation.write_id_maps(uid, gid)
    except OSError:
        return False
    pid = os.fork()
    if pid == 0:
        isolation.set_parent_death_signal()
        return True
    for fd in channels:  # the Sandbox must see EOF as soon as the zygote is gone
        os.close(fd)

    def cleanup() -> None:  # the zygote may have died without removing its cgroup
        if cgroup is not None:
            cgroup.remove()

    def stop(*_: object) -> None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    cleanup()
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


PRELOADED = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections")
PRELOADED += ("random", "re", "statistics", "string", "numpy", "sympy")
WARM_UP = """
from sympy import symbols, Eq, solve, simplify, Rational, sqrt, nsimplify, factor, expand
x = symbols('x')
solve(Eq(3 * x + 7, 25), x)
simplify((x**2 - 1) / (x - 1)) + Rational(1, 3) * sqrt(8)
factor(expand((x + 1) ** 3)); nsimplify(0.5)
"""


def _warm_imports() -> None:
    """Import what step code uses, once, so every forked run starts with it loaded."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    exec(compile(WARM_UP, "<warm-up>", "exec"), {"__name__": "__warmup__"})  # noqa: S102


def _make_cgroup(memory_mb: int) -> tuple[cgroups.RunCgroup | None, str]:
    """This worker's run cgroup, or ``None`` and why not (then rlimits stand alone)."""
    try:
        return cgroups.create((memory_mb + COPY_ON_WRITE_MB) * 1024 * 1024, MAX_PROCESSES), ""
    except OSError as exc:
        return None, str(exc)


def _serve(zygote: Zygote, request_fd: int, reply_fd: int) -> int:
    while True:
        request = recv_message(request_fd)
        if request is None or request.get("op") == "quit":
            return 0
        code_fd = os.memfd_create("code")
        try:
            _splice_into(request_fd, code_fd, int(request["code_bytes"]))
        except (EOFError, OSError):
            os.close(code_fd)
            return 0
        out_fd = err_fd = -1
        try:
            run = zygote.start(code_fd, float(request["timeout_s"]))
            meta, out_fd, err_fd = zygote.collect(*run)
        except Exception as exc:  # noqa: BLE001 - a bug here must not take the pool down
            meta = {"error": "SandboxError: " + describe_error(exc), "error_in_stderr": False}
            meta.update(timed_out=False, stdout_bytes=0, stderr_bytes=0, stderr_size=0)
            meta.update(stderr_tail_bytes=0, duration_s=0.0)
        try:
            send_reply(reply_fd, meta, out_fd, err_fd)
        except BrokenPipeError:  # the Sandbox went away without closing us
            return 0
        finally:
            for fd in (out_fd, err_fd):
                if fd >= 0:
                    os.close(fd)


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # no thread pools: forks must copy one thread
    channels = (os.dup(0), os.dup(1))  # protocol; 0 and 1 become /dev/null
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    memory_mb = int(config["memory_mb"])
    cgroup, cgroup_note = _make_cgroup(memory_mb)
    in_namespaces = _enter_worker_namespaces(channels, cgroup)
    request_fd, reply_fd = channels
    if not config.get("probe"):
        _warm_imports()
    import gc

    gc.freeze()  # keep the collector off the inherited heap: fewer copy-on-write faults
    zygote = Zygote(config["base_dir"], memory_mb, in_namespaces, cgroup, cgroup_note)
    send_message(reply_fd, {"ready": True, "layers": zygote.probe()})
    try:
        return _serve(zygote, request_fd, reply_fd)
    finally:
        if cgroup is not None:
            cgroup.remove()


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))  # skip interpreter teardown: nothing is left to flush
