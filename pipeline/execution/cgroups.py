"""A control group per sandbox worker that holds one run at a time: memory and process caps
that count every process of the run together.

rlimits count per process (address space) or per uid (processes), so a run that forks six
children gets six memory allowances, and one run can use up the process count of the uid that
every worker shares. A cgroup counts the run as a whole: ``memory.max`` (v1:
``memory.limit_in_bytes``) covers all its processes, SysV or memfd memory and tmpfs files, and
``pids.max`` caps its processes and threads without touching the other workers.

cgroup v2 is used when the worker's own cgroup lets it create a child with the memory and pids
controllers (root of a cgroup namespace, or a delegated subtree); otherwise the v1 memory and
pids hierarchies when they are mounted and writable (as root on older hosts). Where neither
works :func:`create` raises ``OSError`` and the sandbox falls back to rlimits (README, "The
sandbox's layers").
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass


def _mounts(proc_self: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, options) of every cgroup filesystem."""
    found = []
    with open(os.path.join(proc_self, "mounts")) as mounts:
        for line in mounts:
            _source, point, fstype, options, *_ = line.split()
            if fstype in ("cgroup", "cgroup2"):
                found.append((point, fstype, set(options.split(","))))
    return found


def _own_paths(proc_self: str) -> dict[str, str]:
    """Our cgroup path per v1 controller, and under '' the v2 one."""
    paths = {}
    with open(os.path.join(proc_self, "cgroup")) as groups:
        for line in groups:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


@dataclass
class RunCgroup:
    """The folders of one cgroup (one for v2, one per controller for v1)."""

    version: int
    memory_dir: str
    pids_dir: str

    @property
    def folders(self) -> list[str]:
        return list(dict.fromkeys((self.memory_dir, self.pids_dir)))

    def set_memory_limit(self, memory_bytes: int) -> None:
        """Cap memory, and swap: a run must not grow by swapping out."""
        if self.version == 2:
            _write(os.path.join(self.memory_dir, "memory.max"), str(memory_bytes))
            self._try_write("memory.swap.max", "0")
            return
        # v1 caps memory + swap together, and memory may never exceed that sum: when the
        # cap grows the sum has to move first, when it shrinks, last.
        self._try_write("memory.memsw.limit_in_bytes", str(memory_bytes))
        _write(os.path.join(self.memory_dir, "memory.limit_in_bytes"), str(memory_bytes))
        self._try_write("memory.memsw.limit_in_bytes", str(memory_bytes))

    def _try_write(self, name: str, value: str) -> None:
        try:
            _write(os.path.join(self.memory_dir, name), value)
        except OSError:
            pass  # no swap accounting on this kernel: nothing to cap

    def join(self) -> None:
        """Move the calling process in (before it drops root); '0' means 'me' in any pid
        namespace."""
        for folder in self.folders:
            _write(os.path.join(folder, "cgroup.procs"), "0")

    def oom_kills(self) -> int:
        """How many times the kernel killed a process here for going past the memory cap."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.memory_dir, name)) as events:
                for line in events:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def kill_all(self) -> None:
        """SIGKILL whatever is left (without a run pid namespace nothing else takes it down)."""
        if self.version == 2:
            try:
                _write(os.path.join(self.pids_dir, "cgroup.kill"), "1")
                return
            except OSError:
                pass
        for folder in self.folders:
            try:
                with open(os.path.join(folder, "cgroup.procs")) as procs:
                    pids = [int(pid) for pid in procs.read().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self, wait_s: float = 2.0) -> None:
        """Delete the folders; processes being killed may need a moment to leave."""
        deadline = time.monotonic() + wait_s
        for folder in self.folders:
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill_all()
                    time.sleep(0.02)


_PREFIX = "rstar-sandbox-"


def _remove_orphans(parent: str) -> None:
    """Empty cgroups of workers whose launcher was killed before it could remove them."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        owner = name[len(_PREFIX) :].split("-")[0]
        if name.startswith(_PREFIX) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass  # still has processes, or not ours to remove


def _make(folder: str) -> str:
    _remove_orphans(os.path.dirname(folder))
    os.mkdir(folder, 0o755)
    return folder


def _create_v2(mount: str, own: str, name: str) -> RunCgroup:
    parent = os.path.join(mount, own.lstrip("/"))
    with open(os.path.join(parent, "cgroup.subtree_control")) as control:
        enabled = set(control.read().split())
    if not {"memory", "pids"} <= enabled:  # fails with EBUSY where we are not delegated
        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
    folder = _make(os.path.join(parent, name))
    with open(os.path.join(folder, "cgroup.controllers")) as available:
        if not {"memory", "pids"} <= set(available.read().split()):
            os.rmdir(folder)
            raise OSError(errno.ENOTSUP, "memory and pids controllers not delegated")
    return RunCgroup(2, folder, folder)


def create(memory_bytes: int, max_processes: int, proc_self: str = "/proc/self") -> RunCgroup:
    """A fresh cgroup beside ours with both caps set; ``OSError`` when none can be made.

    ``proc_self`` is where our ``mounts`` and ``cgroup`` files are read from; tests point it at
    a folder that describes a cgroup2 tree of their own (tests/test_cgroups.py).
    """
    # The creator's pid in the name lets a later worker remove what a killed one left behind.
    name = f"{_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mounts, own = _mounts(proc_self), _own_paths(proc_self)
    group: RunCgroup | None = None
    errors = []
    for point, fstype, _options in mounts:
        if fstype == "cgroup2" and "" in own:
            try:
                group = _create_v2(point, own[""], name)
                break
            except OSError as exc:
                errors.append(f"v2: {exc}")
    if group is None:
        v1 = {
            c: p for p, t, opts in mounts if t == "cgroup" for c in ("memory", "pids") if c in opts
        }
        if not {"memory", "pids"} <= v1.keys() or not {"memory", "pids"} <= own.keys():
            raise OSError(errno.ENOTSUP, "no usable cgroup: " + ("; ".join(errors) or "none"))
        memory_dir = _make(os.path.join(v1["memory"], own["memory"].lstrip("/"), name))
        try:
            pids_dir = _make(os.path.join(v1["pids"], own["pids"].lstrip("/"), name))
        except OSError:
            os.rmdir(memory_dir)
            raise
        group = RunCgroup(1, memory_dir, pids_dir)
    try:
        group.set_memory_limit(memory_bytes)
        _write(os.path.join(group.pids_dir, "pids.max"), str(max_processes))
    except OSError:
        group.remove()
        raise
    return group
