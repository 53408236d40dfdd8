"""The sandbox's system-call filter: what step code may never ask the kernel for.

Landlock and the audit hook stop paths and Python calls; a filter on the system calls
themselves stops what they cannot see: running a program by any route (``execve`` of a
loader copied into a memfd, ``execveat``), new namespaces (a user namespace gives full
capabilities inside it), keyrings, SysV IPC (shared memory outside every rlimit),
io_uring (system calls the filter would not see), inotify/fanotify (they reveal file names
outside the sandbox), sockets of every family, and tracing or reading other processes.

The rules are compiled to BPF by libseccomp (through ``pyseccomp``, a ctypes binding of the
system's libseccomp.so.2) once per worker; each run only installs the compiled program, a
single ``prctl`` (microseconds). A denied call fails with ``EPERM`` (``ENOSYS`` for
``clone3``, so that libc falls back to ``clone``, whose flags the filter can read), which
Python turns into an ordinary ``PermissionError`` for the step's error line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile

# clone() flags that create namespaces; clone3 hides its flags behind a pointer.
_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

DENIED = {
    "programs": ("execve", "execveat"),
    "namespaces": ("unshare", "setns"),
    "keyrings": ("keyctl", "add_key", "request_key"),
    "sysv_ipc": (
        "shmget",
        "shmat",
        "shmdt",
        "shmctl",
        "semget",
        "semop",
        "semtimedop",
        "semctl",
        "msgget",
        "msgsnd",
        "msgrcv",
        "msgctl",
    ),
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "file_watching": (
        "inotify_init",
        "inotify_init1",
        "inotify_add_watch",
        "fanotify_init",
        "fanotify_mark",
    ),
    "sockets": ("socket", "socketpair"),
    # Other processes' memory, and the kernel's own attack surface step code never needs.
    "processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kcmp",
        "process_madvise",
    ),
    "kernel": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsmount",
        "fspick",
        "mount_setattr",
        # open_by_handle_at skips path checks with CAP_DAC_READ_SEARCH, which a run keeps
        # when Python lives where 'nobody' cannot read and the filesystem view is refused.
        "name_to_handle_at",
        "open_by_handle_at",
        "memfd_create",
        "memfd_secret",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "lookup_dcookie",
    ),
}

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_filter() -> bytes:
    """The filter as a raw BPF program; ``OSError`` when libseccomp is missing or refuses."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 not found
        raise OSError(errno.ENOSYS, f"libseccomp unavailable: {exc}") from None
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    deny = pyseccomp.ERRNO(errno.EPERM)
    for names in DENIED.values():
        for name in names:
            try:
                rules.add_rule(deny, name)
            except (OSError, ValueError, RuntimeError):
                pass  # a call this architecture or this libseccomp does not know
    for flag in _NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as program:
        rules.export_bpf(program)
        program.seek(0)
        return program.read()


_libc = ctypes.CDLL(None, use_errno=True)


def install(program: bytes) -> None:
    """Apply the compiled filter to this process and its future children, for good.

    Needs no_new_privs (or CAP_SYS_ADMIN) first. Each BPF instruction is 8 bytes.
    """
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    zero = ctypes.c_ulong(0)
    result = _libc.prctl(
        ctypes.c_int(_PR_SET_SECCOMP),
        ctypes.c_ulong(_SECCOMP_MODE_FILTER),
        ctypes.c_void_p(ctypes.addressof(fprog)),
        zero,
        zero,
    )
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"seccomp filter: {os.strerror(number)}")
