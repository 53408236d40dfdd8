"""Kernel isolation layers for the step-code sandbox, called through ctypes (Linux only).

Each function applies one layer to the *calling* process and raises ``OSError`` when the kernel
refuses, so the caller (:mod:`pipeline.execution.sandbox_worker`) decides whether a missing layer
degrades or fails the run. Every layer here is irreversible for the process that applies it; that is the
point: the short-lived child that runs model-written code confines itself before running it.

Which layer stops what (the sandbox stacks all that the kernel offers):

- pid namespace: the run is pid 1 of its own namespace; when it ends or is killed every process
  it spawned dies with it, and it cannot see or signal processes outside.
- network namespace: no interfaces at all, so no TCP/UDP/raw traffic, not even to localhost.
- mount namespace + tmpfs: a private, size-capped temp folder that vanishes with the run.
- filesystem view (per worker, :func:`enter_view`): the root is a small read-only tmpfs that
  holds bind mounts of Python, its packages and system libraries and nothing else, so paths
  outside it do not exist: ``stat``/``listdir``/``exists`` reveal no names, sizes or owners.
  Its folders are 0755, so uid 65534 reaches an interpreter that lives under /root.
- user namespace (per run): the process-count limit counts only this run's processes, and
  capabilities held inside it are worthless outside.
- uid drop (when started as root): the code runs as ``nobody`` (65534), not as root.
- rlimits: address space, CPU seconds, processes, file size (caps captured output too), open
  files, no core dumps.
- no_new_privs + Landlock: only the Python installation and system libraries can be read
  (not the home folder, ``/etc``, ``/tmp`` or ``/proc``), only the private temp folder and
  ``/dev/null`` can be written, no file can be executed (no ``sh``, no ``rm``); TCP
  bind/connect denied (ABI >= 4); signals and abstract unix sockets scoped to the run
  (ABI >= 6), so ``kill`` cannot reach the worker, the caller or anything else.
- capabilities dropped: nothing privileged is left even inside the namespaces.

Left open by the kernel: below Landlock ABI 9, connecting to unix sockets that live in a
readable folder with permissions open to everyone.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
from collections.abc import Sequence
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000

# Landlock syscalls share one number on every architecture that has them (since Linux 5.13).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

# Filesystem access rights (include/uapi/linux/landlock.h) and the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_ABI1 = (1 << 13) - 1  # bits 0..12: execute .. make_sym
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_CAP_VERSION_3 = 0x20080522
CAP_DAC_READ_SEARCH = 2

NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def unshare(flags: int) -> None:
    """Move the caller into new namespaces (``CLONE_NEWPID`` applies to its future children)."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace behind ``fd``; the zygote uses it to reset its pid namespace."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def _prctl(option: int, value: int, what: str) -> None:
    zero = ctypes.c_ulong(0)
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), zero, zero, zero), what)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the parent. The kernel clears this on credential changes: set it again after."""
    _prctl(_PR_SET_PDEATHSIG, sig, "prctl(PR_SET_PDEATHSIG)")


def set_dumpable() -> None:
    """After a uid change /proc/self belongs to root; a dumpable process can write its id maps."""
    _prctl(_PR_SET_DUMPABLE, 1, "prctl(PR_SET_DUMPABLE)")


def set_no_new_privs() -> None:
    """Required by Landlock; also makes setuid binaries useless to the sandboxed code."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def write_id_maps(uid: int, gid: int) -> None:
    """Map our own uid and gid into the user namespace we just created (identity mapping)."""
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
        ("/proc/self/gid_map", f"{gid} {gid} 1\n"),
    ):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    result = _libc.mount(
        _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)
    )
    _check(result, f"mount {target}")


def mount_private_tmpfs(path: str, size_mb: int, uid: int, gid: int) -> None:
    """A size-capped tmpfs on ``path`` inside a fresh mount namespace.

    ``/`` becomes private first so the mount can never propagate back to the host.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    options = f"size={size_mb}m,nr_inodes=4096,mode=0700,uid={uid},gid={gid}"
    _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)


def drop_to_nobody(keep_read_search: bool = False) -> None:
    """Root only: become uid/gid 65534 for good, which also clears every capability.

    ``keep_read_search`` keeps CAP_DAC_READ_SEARCH (read any file, nothing else) for when
    Python itself lives where 'nobody' cannot read, e.g. under /root: reads are allowed by
    design, and without it every not-yet-imported module would fail to import.
    """
    if keep_read_search:
        _prctl(_PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    if keep_read_search:
        _set_capabilities(1 << CAP_DAC_READ_SEARCH)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _set_capabilities(mask: int) -> None:
    """Effective = permitted = ``mask`` (capabilities 0..31), inheritable empty."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def drop_capabilities() -> None:
    """Clear effective, permitted and inheritable sets (namespace creators hold all of them)."""
    _set_capabilities(0)


# keyctl(2) has no libc wrapper in glibc; its number differs per architecture.
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}
_KEYCTL_JOIN_SESSION_KEYRING = 1


def join_fresh_session_keyring() -> None:
    """Replace the inherited session keyring (the caller's, with its keys) by a new, empty
    one that ends with the run. The seccomp filter then refuses every keyring call, so the
    user keyring of uid 65534, shared by all runs, stays out of reach too."""
    number = _SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        raise OSError(38, "keyctl number unknown on this architecture")
    keyring = _libc.syscall(
        ctypes.c_long(number), ctypes.c_int(_KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None)
    )
    _check(int(keyring), "keyctl(JOIN_SESSION_KEYRING)")


def readable_by_others(path: str) -> bool:
    """Whether a process with no relation to the owner can reach and read ``path``."""
    current = os.path.abspath(path)
    need = stat.S_IROTH | (stat.S_IXOTH if os.path.isdir(current) else 0)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if mode & need != need:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current, need = parent, stat.S_IXOTH


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run; see :func:`set_rlimits`."""

    address_space_bytes: int
    cpu_seconds: int
    processes: int | None  # None: left as inherited (a per-run pids cgroup caps them)
    file_bytes: int
    open_files: int = 256


def set_rlimits(limits: Limits) -> None:
    """Lower soft and hard limits together so the code cannot raise them back."""
    pairs = (
        (resource.RLIMIT_AS, limits.address_space_bytes, limits.address_space_bytes),
        # SIGXCPU at the soft limit, SIGKILL one second later.
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_CORE, 0, 0),
    )
    for which, soft, hard in pairs:
        if soft is None:
            continue
        resource.setrlimit(which, (soft, hard))


# --------------------------------------------------------------------------- Landlock


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(result), 0)


def _handled_fs(abi: int) -> int:
    mask = _FS_ABI1
    if abi >= 2:
        mask |= FS_REFER
    if abi >= 3:
        mask |= FS_TRUNCATE
    if abi >= 5:
        mask |= FS_IOCTL_DEV
    return mask


def _add_path_rule(ruleset_fd: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(access, fd)
        result = _libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_ADD_RULE),
            ctypes.c_int(ruleset_fd),
            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
        _check(int(result), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def apply_landlock(writable_dir: str, abi: int, readable: Sequence[str]) -> dict[str, bool]:
    """Read only ``readable`` (folders and files), write only ``writable_dir`` and /dev/null,
    execute nothing; no TCP; scoped signals.

    Step code needs to read Python and the libraries it imports, nothing else: the home folder
    or ``/proc/<pid>/environ`` may hold tokens. Mapping shared libraries needs no execute right
    (Landlock checks it on ``execve`` only), so denying it stops ``sh``/``rm``/``python`` from
    being started while imports keep working. Needs no_new_privs set first. Returns which parts
    the ABI allowed, for the report.
    """
    if abi < 1:
        raise OSError(38, "Landlock is not available")
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: all TCP denied
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
        size = 24
    ruleset_fd = _check(
        int(
            _libc.syscall(
                ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
                ctypes.byref(attr),
                ctypes.c_size_t(size),
                ctypes.c_uint32(0),
            )
        ),
        "landlock_create_ruleset",
    )
    try:
        for path in readable:
            folder = os.path.isdir(path)
            try:
                _add_path_rule(ruleset_fd, path, FS_READ_FILE | (FS_READ_DIR if folder else 0))
            except OSError:  # e.g. gone, or out of reach of 'nobody': it stays unreadable
                pass
        dev_null = FS_READ_FILE | FS_WRITE_FILE | (handled & (FS_TRUNCATE | FS_IOCTL_DEV))
        _add_path_rule(ruleset_fd, "/dev/null", dev_null)
        _add_path_rule(ruleset_fd, writable_dir, handled & ~FS_EXECUTE)
        result = _libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)
        )
        _check(int(result), "landlock_restrict_self")
    finally:
        os.close(ruleset_fd)
    return {
        "landlock_filesystem": True,
        "landlock_network": abi >= 4,
        "landlock_signal_scope": abi >= 6,
    }


# --------------------------------------------------------------------------- filesystem view

_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MNT_DETACH = 2
# statvfs flags -> mount flags a read-only remount must repeat (inside a user namespace the
# kernel refuses to clear flags the source mount was locked with).
_KEPT_FLAGS = (
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOEXEC, _MS_NOEXEC),
    (os.ST_NOATIME, 0x400),
    (os.ST_NODIRATIME, 0x800),
    (os.ST_RELATIME, 0x200000),
)
# pivot_root(2) has no glibc wrapper; its number differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_SYMLINK_DEPTH = 40  # as the kernel's own limit on links followed in one lookup


def real_path_and_links(path: str, links: dict[str, str], depth: int = 0) -> str | None:
    """``path`` with every symlink resolved, or ``None`` when it does not exist; each symlink
    met on the way is recorded in ``links`` (its place -> its text) so the view can hold the
    same link: code that names ``/lib/...`` or a venv's ``bin/python`` finds what it expects."""
    if depth > _SYMLINK_DEPTH:
        return None
    parts = [part for part in path.split("/") if part and part != "."]
    current = "/"
    for index, part in enumerate(parts):
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            links[candidate] = target
            rest = os.path.join(current, target, *parts[index + 1 :])
            return real_path_and_links(rest, links, depth + 1)
        if not os.path.lexists(candidate):
            return None
        current = candidate
    return current


def _kept_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(mount_flag for st_flag, mount_flag in _KEPT_FLAGS if flags & st_flag)


def _make_place(root: str, path: str, folder: bool) -> str:
    """An empty folder or file at ``path`` inside ``root`` (parents 0755: reachable by uid
    65534 even where the host's parents, e.g. /root, are not), to mount something on."""
    place = root + path
    os.makedirs(place if folder else os.path.dirname(place), mode=0o755, exist_ok=True)
    if not folder and not os.path.exists(place):
        os.close(os.open(place, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    return place


def bind(source: str, place: str, read_only: bool) -> None:
    """Bind ``source`` (not its submounts) on ``place``; read-only takes a second remount."""
    _mount(source, place, None, _MS_BIND, None)
    if read_only:
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _kept_flags(place)
        _mount(None, place, None, flags, None)


def detach(path: str) -> None:
    """Lazily unmount ``path`` from the caller's mount namespace."""
    _check(_libc.umount2(_encode(path), ctypes.c_int(_MNT_DETACH)), f"umount {path}")


def _pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, "pivot_root number unknown on this architecture")
    result = _libc.syscall(ctypes.c_long(number), _encode(new_root), _encode(put_old))
    _check(int(result), "pivot_root")


def _mount_proc(place: str) -> None:
    """procfs of our pid namespace; where the kernel allows, with only the process folders
    (subset=pid) and each visible only to a process that may trace it (hidepid)."""
    for options in ("hidepid=invisible,subset=pid", "hidepid=2", None):
        try:
            _mount("proc", place, "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)
            return
        except OSError:
            continue
    raise OSError(1, f"mount {place}: procfs refused")


@dataclass(frozen=True)
class View:
    """What :func:`enter_view` puts in the caller's new root (everything else is absent)."""

    read_only: Sequence[str]  # bound at their own paths, read-only (symlinks on the way kept)
    devices: Sequence[str]  # device nodes bound at their own paths (writable: /dev/null)
    writable: Sequence[tuple[str, str]] = ()  # (source, place) bound read-write
    scratch: str = "/tmp"  # a private tmpfs, the caller's own
    scratch_mb: int = 64


def enter_view(view: View, staging: str) -> None:
    """Give the caller a new mount namespace whose root is a small tmpfs holding only ``view``.

    The host's tree is unmounted from the namespace (pivot_root, then a lazy unmount), so
    ``stat``, ``listdir`` and ``exists`` on any other path find nothing: unlike Landlock,
    which checks opens, this also hides names, sizes, owners and times. ``staging`` is an
    empty folder the new root is built on; it stays empty on the host. The root ends
    read-only. Needs CAP_SYS_ADMIN (root, or our own user namespace); any refusal raises.
    """
    unshare(CLONE_NEWNS)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    _mount("tmpfs", staging, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    # The scratch tmpfs first: a Python that lives under it (a venv in /tmp) is bound on top.
    scratch = _make_place(staging, view.scratch, folder=True)
    options = f"size={view.scratch_mb}m,nr_inodes=4096,mode=0711"
    _mount("tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)
    links: dict[str, str] = {}
    real = [real_path_and_links(path, links) for path in view.read_only]
    bound: list[str] = []
    # Parents first, so a path inside an already bound folder needs no mount of its own.
    for path in sorted({p for p in real if p is not None}, key=lambda p: p.count("/")):
        if any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            continue
        bind(path, _make_place(staging, path, os.path.isdir(path)), read_only=True)
        bound.append(path)
    for place, target in links.items():
        if any(place.startswith(b.rstrip("/") + "/") for b in bound):
            continue  # the bound folder already holds it
        os.makedirs(os.path.dirname(staging + place), mode=0o755, exist_ok=True)
        if not os.path.lexists(staging + place):
            os.symlink(target, staging + place)
    for device in view.devices:
        if os.path.exists(device):
            bind(device, _make_place(staging, device, folder=False), read_only=False)
    for source, place in view.writable:
        bind(source, _make_place(staging, place, os.path.isdir(source)), read_only=False)
    _mount_proc(_make_place(staging, "/proc", folder=True))
    _mount(None, staging, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    # pivot_root(".", ".") stacks the old root on the new one, where a lazy unmount drops it:
    # no folder for the old root is left in the view. A refusal from here on would leave the
    # caller half-moved, so the caller treats it as fatal, not as a missing layer.
    os.chdir(staging)
    _pivot_root(".", ".")
    try:
        detach(".")
        os.chdir("/")
    except OSError as exc:
        raise RuntimeError(f"filesystem view left half-built: {exc}") from None
