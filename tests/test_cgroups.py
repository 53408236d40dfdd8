"""The cgroup v2 path of pipeline.execution.cgroups, against a cgroup2 tree kept in a temp folder.

This machine may only have cgroup v1, so the v2 logic runs here against plain folders: our
``mounts`` and ``cgroup`` files say that a cgroup2 filesystem is mounted on the temp folder and
that we live in ``/service``. What the kernel does by itself on a real cgroup2 mount is played
by :class:`FakeCgroup2` (and only that): a new folder gets its interface files, with the
controllers its parent hands down, and a folder goes away only when no process is left in it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipeline.execution import cgroups

NEVER_A_PID = 4194305  # past PID_MAX_LIMIT: no process ever has it


class FakeCgroup2:
    """The kernel's side of ``mkdir`` and ``rmdir`` in a cgroup2 tree rooted at ``root``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self._mkdir, self._rmdir = os.mkdir, os.rmdir
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)

    def _inside(self, path: str | os.PathLike[str]) -> bool:
        return Path(path).resolve().is_relative_to(self.root) and Path(path) != self.root

    def make(self, path: Path, controllers: str, subtree: str = "") -> None:
        """A cgroup that already exists (ours, set up by whoever started us)."""
        self._mkdir(path)
        self._fill(path, controllers, subtree)

    def _fill(self, path: Path, controllers: str, subtree: str = "") -> None:
        files = {
            "cgroup.controllers": controllers,
            "cgroup.subtree_control": subtree,
            "cgroup.procs": "",
            "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        }
        for name, text in files.items():
            (path / name).write_text(text)

    def mkdir(self, path, mode=0o777, *, dir_fd=None):  # noqa: ANN001 - os.mkdir's shape
        self._mkdir(path, mode, dir_fd=dir_fd)
        if dir_fd is None and self._inside(path):
            parent = Path(path).parent
            offered = set((parent / "cgroup.controllers").read_text().split())
            enabled = {
                c.lstrip("+") for c in (parent / "cgroup.subtree_control").read_text().split()
            }
            self._fill(Path(path), " ".join(sorted(offered & enabled)))

    def rmdir(self, path, *, dir_fd=None):  # noqa: ANN001 - os.rmdir's shape
        if dir_fd is None and self._inside(path) and Path(path).is_dir():
            if (Path(path) / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            for entry in Path(path).iterdir():
                if entry.is_file():
                    entry.unlink()
        self._rmdir(path, dir_fd=dir_fd)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """(the fake kernel, the proc_self folder, our own cgroup folder)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    kernel = FakeCgroup2(root, monkeypatch)
    (root / "cgroup.controllers").write_text("cpu io memory pids")
    (root / "cgroup.subtree_control").write_text("memory pids")
    kernel.make(root / "service", "memory pids", subtree="memory pids")
    proc_self = tmp_path / "proc-self"
    proc_self.mkdir()
    (proc_self / "mounts").write_text(
        f"/dev/vda / ext4 rw 0 0\ncgroup2 {root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
    )
    (proc_self / "cgroup").write_text("0::/service\n")
    return kernel, proc_self, root / "service"


def test_v2_cgroup_is_made_beside_ours_with_both_caps(tree):
    _kernel, proc_self, service = tree
    group = cgroups.create(96 * 2**20, 64, proc_self=str(proc_self))
    folder = Path(group.memory_dir)
    assert group.version == 2 and group.pids_dir == group.memory_dir
    assert folder.parent == service and folder.name.startswith(f"rstar-sandbox-{os.getpid()}-")
    assert (folder / "memory.max").read_text() == str(96 * 2**20)
    assert (folder / "memory.swap.max").read_text() == "0"  # no growing by swapping out
    assert (folder / "pids.max").read_text() == "64"
    group.remove()
    assert not folder.exists()


def test_v2_join_oom_count_kill_and_removal(tree):
    _kernel, proc_self, _service = tree
    group = cgroups.create(2**26, 64, proc_self=str(proc_self))
    folder = Path(group.memory_dir)
    group.join()
    assert (folder / "cgroup.procs").read_text() == "0"  # '0': the writer, in any pid namespace
    assert group.oom_kills() == 0
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    assert group.oom_kills() == 2
    # a process still inside: removal kills (cgroup.kill) and gives up after its wait
    (folder / "cgroup.procs").write_text("4242")
    group.remove(wait_s=0.05)
    assert folder.exists() and (folder / "cgroup.kill").read_text() == "1"
    (folder / "cgroup.procs").write_text("")  # the kill took effect
    group.remove()
    assert not folder.exists()


def test_v2_enables_the_controllers_when_allowed_and_leaves_nothing_when_not(tree):
    kernel, proc_self, service = tree
    (service / "cgroup.subtree_control").write_text("")  # not handed down to children yet
    group = cgroups.create(2**26, 64, proc_self=str(proc_self))
    assert (service / "cgroup.subtree_control").read_text() == "+memory +pids"
    group.remove()
    # our cgroup itself lacks the memory controller: no usable v2 cgroup, nothing left behind
    (service / "cgroup.controllers").write_text("pids")
    with pytest.raises(OSError, match="no usable cgroup: v2: .*not delegated"):
        cgroups.create(2**26, 64, proc_self=str(proc_self))
    assert [p.name for p in service.iterdir() if p.is_dir()] == []


def test_v2_removes_what_killed_workers_left_and_keeps_live_ones(tree):
    kernel, proc_self, service = tree
    dead = service / f"rstar-sandbox-{NEVER_A_PID}-0badcafe"
    alive = service / f"rstar-sandbox-{os.getpid()}-0goodcaf"
    kernel.make(dead, "memory pids")
    kernel.make(alive, "memory pids")
    group = cgroups.create(2**26, 64, proc_self=str(proc_self))
    assert not dead.exists() and alive.exists()
    group.remove()
