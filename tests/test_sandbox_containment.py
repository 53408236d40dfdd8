"""Attacks that got out of the sandbox before issue 16; each must come back contained, with the
pool alive after it. Checks that need a layer skip where `rstar doctor` shows it inactive."""

from __future__ import annotations

import ast
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.execution.sandbox import Sandbox

MEMORY_MB = 64


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=5.0, memory_mb=MEMORY_MB) as sb:
        yield sb


def needs(sb: Sandbox, layer: str) -> None:
    if sb.isolation.get(layer) is not True:
        pytest.skip(f"{layer} is not active on this machine")


def assert_pool_works(sb: Sandbox) -> None:
    assert sb.run("print(6 * 7)").stdout == "42\n"


# ctypes reaches the kernel past the audit hook; errno 1 (EPERM) is the filter's answer,
# Landlock's would be 13 (EACCES).
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def syscall_result(sb: Sandbox, call: str) -> str:
    result = sb.run(LIBC + f"r = {call}\nprint(r, ctypes.get_errno())")
    assert result.error is None, result
    return result.stdout.strip()


def test_no_program_runs_not_even_a_loader_copied_into_memory(sandbox):
    needs(sandbox, "seccomp")
    loader = "/lib64/ld-linux-x86-64.so.2"
    code = LIBC + (
        f"data = open({loader!r}, 'rb').read()\n"
        "fd = libc.syscall(319, b'x', 0)\n"  # memfd_create, past os.memfd_create
        "print('memfd', fd, ctypes.get_errno())\n"
        "argv = (ctypes.c_char_p * 2)(b'/usr/bin/id', None)\n"
        "print('execve', libc.execve(b'/usr/bin/id', argv, None), ctypes.get_errno())\n"
        "print('execveat', libc.syscall(322, 0, b'/bin/sh', argv, None, 0), ctypes.get_errno())\n"
    )
    result = sandbox.run(code)
    assert result.stdout == "memfd -1 1\nexecve -1 1\nexecveat -1 1\n", result
    assert "uid=" not in result.stdout
    assert_pool_works(sandbox)


FORKED_HOLDERS = (
    LIBC
    + """import time
kids = []
for _ in range(6):
    pid = libc.fork()
    if pid == 0:
        block = bytearray(40 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(1)
        os._exit(0)
    kids.append(pid)
held = 0
for pid in kids:
    _, status = os.waitpid(pid, 0)
    held += 40 * (status == 0)
print(held)
"""
)


def test_memory_cap_counts_every_process_of_the_run(sandbox):
    needs(sandbox, "cgroup")
    result = sandbox.run(FORKED_HOLDERS)
    assert result.error is None, result
    held_mb = int(result.stdout)
    assert held_mb <= MEMORY_MB + 32  # memory_mb plus the copy-on-write allowance
    assert_pool_works(sandbox)


def test_memory_past_the_cap_in_one_process_is_a_recorded_error(sandbox):
    needs(sandbox, "cgroup")
    # under RLIMIT_AS (about memory_mb on top of the interpreter) but past the run's cgroup cap
    code = "import os\nx = []\nfor _ in range(200):\n    x.append(os.urandom(2**20))\nprint('held')"
    result = sandbox.run(code)
    assert result.error is not None and result.stdout == ""
    assert result.error.startswith(("MemoryError", "Killed"))
    assert_pool_works(sandbox)


def test_sysv_shared_memory_is_refused(sandbox):
    needs(sandbox, "seccomp")
    assert syscall_result(sandbox, "libc.shmget(0, 384 * 2**20, 0o1600)") == "-1 1"
    assert_pool_works(sandbox)


BOMB = (
    LIBC
    + """import time
made = 0
while made < 10000:
    pid = libc.fork()
    if pid == 0:
        time.sleep(1.5)
        libc._exit(0)
    if pid < 0:
        break
    made += 1
time.sleep(1.5)
print(made)
"""
)
THREADS = (
    "import threading, time\ntime.sleep(0.5)\n"
    "ts = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(4)]\n"
    "[t.start() for t in ts]\n[t.join() for t in ts]\nprint('threads ok')"
)


def test_a_fork_bomb_leaves_the_other_workers_run_its_processes(sandbox):
    needs(sandbox, "cgroup")
    bomb, threads = sandbox.run_many([BOMB, THREADS])
    assert threads.error is None and threads.stdout == "threads ok\n"
    assert bomb.error is not None or int(bomb.stdout) < 64  # capped by pids.max
    assert_pool_works(sandbox)


@pytest.mark.parametrize(
    "flags",
    [0x10000000, 0x10000000 | 0x20000000 | 0x40000000],  # NEWUSER (+ PID, NET)
)
def test_no_namespace_can_be_created(sandbox, flags):
    needs(sandbox, "seccomp")
    assert syscall_result(sandbox, f"libc.unshare({flags})") == "-1 1"
    # clone(2) with namespace flags from a libc fork-alike: refused as well
    assert syscall_result(sandbox, f"libc.syscall(56, {flags} | 17, 0, 0, 0, 0)") == "-1 1"
    assert_pool_works(sandbox)


def test_no_socket_of_any_family(sandbox, tmp_path):
    needs(sandbox, "seccomp")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(private / "app.sock"))
    listener.listen()
    listener.settimeout(0.2)
    try:
        for family in ("AF_UNIX", "AF_INET", "AF_VSOCK", "AF_NETLINK", "AF_PACKET"):
            code = f"import socket\ns = socket.socket(socket.{family}, socket.SOCK_DGRAM)"
            result = sandbox.run(code)
            assert result.error == "PermissionError: [Errno 1] Operation not permitted", family
        code = (
            f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(private / 'app.sock')!r})"
        )
        assert sandbox.run(code).error is not None
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert_pool_works(sandbox)


@pytest.mark.parametrize(
    "call",
    [
        "libc.syscall(250, 0, -3, 0)",  # keyctl(GET_KEYRING_ID, the session keyring)
        "libc.syscall(250, 0, -4, 0)",  # ... the user keyring, shared by every run's uid
        "libc.syscall(248, b'user', b'left', b'state', 5, -4)",  # add_key to the user keyring
    ],
)
def test_keyrings_are_out_of_reach(sandbox, call):
    needs(sandbox, "seccomp")
    assert syscall_result(sandbox, call) == "-1 1"
    assert_pool_works(sandbox)


FORGE = (
    "import os, json\n"
    "fake = json.dumps({'error': None}).encode()\n"
    "for fd in range(3, 256):\n"
    "    try:\n        os.write(fd, fake)\n        os.close(fd)\n"
    "    except OSError:\n        pass\n"
    "json.dumps = lambda *a, **k: '{\"error\": null}'\n"
    "raise ValueError('forged?')"
)


def test_a_run_cannot_write_its_own_result(sandbox):
    result = sandbox.run(FORGE)
    assert result.error == "ValueError: forged?"
    assert_pool_works(sandbox)


def _zygote_memory_holds(sb: Sandbox, needle: bytes) -> bool:
    """Read every zygote's writable memory from outside (we started it, as root or same uid)."""
    found = False
    for launcher in sb.worker_pids:
        for zygote in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
            with open(f"/proc/{zygote}/maps") as maps, open(f"/proc/{zygote}/mem", "rb") as mem:
                for line in maps:
                    span, perms = line.split()[:2]
                    if "rw" not in perms:
                        continue
                    start, end = (int(part, 16) for part in span.split("-"))
                    try:
                        mem.seek(start)
                        found |= needle in mem.read(end - start)
                    except (OSError, ValueError, OverflowError):
                        continue
    return found


def test_no_earlier_run_data_in_the_memory_a_run_starts_with():
    token = f"secret-{uuid.uuid4().hex}"
    with Sandbox(workers=1, timeout_s=5.0, memory_mb=MEMORY_MB) as sb:
        if not Path(f"/proc/{sb.worker_pids[0]}/mem").exists():
            pytest.skip("no /proc here")
        for _ in range(3):
            result = sb.run(f"print({token!r} * 50)\nimport sys\nprint({token!r}, file=sys.stderr)")
            assert result.stdout == token * 50 + "\n"
        assert not _zygote_memory_holds(sb, token.encode())
        assert_pool_works(sb)


def test_file_watching_is_refused(sandbox):
    needs(sandbox, "seccomp")
    assert syscall_result(sandbox, "libc.inotify_init1(0)") == "-1 1"
    assert syscall_result(sandbox, "libc.syscall(300, 0, 0)") == "-1 1"  # fanotify_init
    assert syscall_result(sandbox, "libc.syscall(425, 8, 0)") == "-1 1"  # io_uring_setup
    assert_pool_works(sandbox)


def test_doctor_lists_the_new_layers(sandbox):
    layers = ("seccomp", "cgroup", "session_keyring", "filesystem_view", "audit_hook")
    for layer in (*layers, "user_namespace"):
        assert isinstance(sandbox.isolation[layer], (bool, str))


# --------------------------------------------------------------------------- filesystem view

REPO = Path(__file__).resolve().parent.parent


def _host_paths(tmp_path: Path) -> list[str]:
    """Paths that exist on this machine but that no run has any business knowing about."""
    secret = tmp_path / "token.txt"
    secret.write_text("hf_secret_value")
    candidates = [
        secret,
        Path("/etc/passwd"),
        Path("/etc/hostname"),
        Path.home() / ".bashrc",
        REPO / "README.md",
        REPO / "dvc.yaml",
        REPO / "tests",
        Path("/sys/fs/cgroup"),
        Path("/var"),
        Path("/dev/shm"),
        Path(f"/proc/{os.getpid()}"),
    ]
    return [str(path) for path in candidates if path.exists()]


PROBE_METADATA = """import os, glob
found = []
for path in {paths!r}:
    for look in (os.path.exists, os.path.lexists, os.stat, os.lstat, os.access):
        try:
            answer = look(path, os.F_OK) if look is os.access else look(path)
        except OSError:
            continue
        if answer:
            found.append((path, look.__name__))
print(found, glob.glob('/etc/*'), glob.glob({repo!r} + '/*'))
"""


def test_metadata_outside_the_sandbox_is_not_there(sandbox, tmp_path):
    needs(sandbox, "filesystem_view")
    paths = _host_paths(tmp_path)
    assert len(paths) >= 6  # the check is only worth something if these exist out here
    result = sandbox.run(PROBE_METADATA.format(paths=paths, repo=str(REPO)))
    assert result.error is None, result
    assert result.stdout == "[] [] []\n"  # glob finds nothing: no names leak either
    assert_pool_works(sandbox)


def _view_names() -> set[str]:
    """Names the view itself is made of: parts of the paths it holds, and its own folders."""
    from pipeline.execution import sandbox_worker

    names = {"proc", "tmp", "dev", ".cgroup", "null", "zero", "urandom", "self", "thread-self"}
    for path in (*sandbox_worker.readable_paths(), *sandbox_worker._readable_sources()):
        names.update(part for part in path.split("/") if part)
    return names


@pytest.mark.parametrize(
    "folder", ["/", "/work", str(REPO), str(Path.home()), "/etc", "/tmp", "/proc", "/dev"]
)
def test_listing_a_folder_reveals_no_host_names(sandbox, folder):
    needs(sandbox, "filesystem_view")
    code = (
        f"import os\ntry:\n    print(sorted(os.listdir({folder!r})))\n"
        "except OSError as exc:\n    print([type(exc).__name__])"
    )
    result = sandbox.run(code)
    assert result.error is None, result
    shown = set(ast.literal_eval(result.stdout))
    # Landlock refuses the listing; without it only the view's own entries (and pids) show
    leaked = shown - _view_names() - {"PermissionError", "FileNotFoundError"}
    assert not {name for name in leaked if not name.isdigit()}, leaked
    assert_pool_works(sandbox)


def test_the_view_cannot_be_left(sandbox):
    needs(sandbox, "filesystem_view")
    code = LIBC + (
        "print(libc.chroot(b'/..'), ctypes.get_errno())\n"
        "print(libc.umount2(b'/', 2), ctypes.get_errno())\n"
        "print(libc.mount(b'/', b'/tmp', None, 0x1000, None), ctypes.get_errno())\n"
        "print(os.path.exists('/../../etc/passwd'), os.path.exists('/proc/1/root/etc/passwd'))\n"
    )
    result = sandbox.run(code)
    assert result.stdout == "-1 1\n-1 1\n-1 1\nFalse False\n", result
    assert_pool_works(sandbox)


def test_the_view_holds_what_step_code_uses(sandbox):
    needs(sandbox, "filesystem_view")
    # modules the zygote did not preload are imported from the view's read-only mounts
    code = (
        "import csv, json, sqlite3, sys, os, tempfile, time, mpmath, numpy, sympy\n"
        "import numpy.linalg\n"
        "db = sqlite3.connect(':memory:')\n"
        "print(db.execute('select 6 * 7').fetchone()[0], numpy.linalg.det(numpy.eye(2)))\n"
        "print(os.path.exists(sys.executable), len(os.urandom(8)), len(open('/dev/urandom', 'rb').read(4)))\n"
        "open('/dev/null', 'w').write('gone')\n"
        "with tempfile.NamedTemporaryFile('w+') as f:\n"
        "    f.write('kept'); f.seek(0); print(f.read(), time.tzname[0] != '')\n"
        "print(sympy.nsimplify(mpmath.mpf('0.5')))\n"
    )
    result = sandbox.run(code)
    assert result.error is None, result
    assert result.stdout == "42 1.0\nTrue 8 4\nkept True\n1/2\n"


def _run_processes(sb: Sandbox) -> list[int]:
    """Processes of uid 65534 below the workers: the runs under way (seen from out here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == ["65534"]:
            pid, parents = int(entry.name), set()
            while pid > 1 and pid not in sb.worker_pids and pid not in parents:
                parents.add(pid)
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    break
                pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid in sb.worker_pids:
                found.append(int(entry.name))
    return found


def test_a_run_has_its_own_user_namespace_and_no_capabilities(sandbox):
    needs(sandbox, "user_namespace")
    # the run checks its own capabilities (capget) while we look at it from outside
    code = LIBC + (
        "import time\n"
        "header = (ctypes.c_uint32 * 2)(0x20080522, 0)\ndata = (ctypes.c_uint32 * 6)()\n"
        "libc.capget(header, data)\nprint(list(data))\n"
        "time.sleep(2)\n"
    )
    results = []
    runner = threading.Thread(target=lambda: results.append(sandbox.run(code)))
    runner.start()
    deadline, runs = time.monotonic() + 5, []
    while not runs and time.monotonic() < deadline:
        runs = _run_processes(sandbox)
        time.sleep(0.05)
    assert runs, "no run seen from outside"
    own = os.readlink("/proc/self/ns/user")
    for pid in runs:
        assert os.readlink(f"/proc/{pid}/ns/user") != own
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["65534", "65534", "1"]
        caps = dict(
            line.split(":\t")
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Cap")
        )
        for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(caps[name], 16) == 0, (name, caps)
    runner.join()
    assert results[0].error is None and results[0].stdout == "[0, 0, 0, 0, 0, 0]\n", results
    assert_pool_works(sandbox)


def test_the_view_is_built_once_per_worker(sandbox):
    needs(sandbox, "filesystem_view")
    for launcher in sandbox.worker_pids:
        (zygote,) = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        root = Path(f"/proc/{zygote}/root")
        assert os.readlink(f"/proc/{zygote}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert not (root / "etc" / "passwd").exists()
        assert not (root / REPO.relative_to("/") / "README.md").exists()
        assert (root / REPO.relative_to("/") / "pipeline" / "execution" / "sandbox.py").exists()
    assert_pool_works(sandbox)


REFUSED_VIEW = """
import json, warnings, pyseccomp, errno
rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "pivot_root")
rules.load()  # a kernel, or a container, that refuses to move a root
from pipeline.execution.sandbox import Sandbox, isolation_report
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with Sandbox(workers=1, timeout_s=5, memory_mb=128) as sb:
        run = sb.run("import os\\nprint(os.path.exists('/etc/passwd'))")
        layers = sb.isolation
print(json.dumps({"layers": layers, "stdout": run.stdout, "error": run.error,
                  "doctor": isolation_report(), "warnings": [str(w.message) for w in caught]}))
"""


def test_a_refused_view_is_a_warning_and_the_rest_still_holds():
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", REFUSED_VIEW], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["layers"]["filesystem_view"] is False
    assert report["doctor"]["filesystem_view"] is False
    assert "pivot_root" in report["doctor"]["filesystem_view_unavailable"]
    assert [w for w in report["warnings"] if "'filesystem_view'" in w]
    assert report["error"] is None and report["stdout"] == "True\n"  # exists, as before


NO_CGROUP_NO_USERNS = """
import errno, json, pyseccomp
rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)  # a kernel that refuses user namespaces
new_user = pyseccomp.Arg(0, pyseccomp.MASKED_EQ, 0x10000000, 0x10000000)
rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare", new_user)
rules.load()
from pipeline.execution.sandbox import Sandbox
with Sandbox(workers=2, timeout_s=5, memory_mb=128) as sb:
    # one after the other: concurrent runs share the count of their uid (README)
    bomb, threads = sb.run({bomb!r}), sb.run({threads!r})
    after = sb.run("print(6 * 7)")
print(json.dumps({{"layers": sb.isolation, "threads": threads.stdout, "bomb": bomb.stdout,
                  "after": after.stdout}}))
"""


def test_without_cgroup_or_user_namespace_rlimits_still_cap_a_run():
    """The fallback of README's sandbox section: no cgroup (none mounted in this mount
    namespace) and no per-run user namespace; RLIMIT_NPROC, counted through the host's /proc
    from inside the filesystem view, still stops a fork bomb and lets threads run."""
    import json
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to hide the cgroup mounts")
    script = NO_CGROUP_NO_USERNS.format(threads=THREADS, bomb=BOMB)
    command = f'umount -R /sys/fs/cgroup 2>/dev/null; exec {sys.executable} -c "$0"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command, script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["layers"]["cgroup"] is False and report["layers"]["user_namespace"] is False
    assert report["threads"] == "threads ok\n"
    # RLIMIT_NPROC = 64 + nobody's other processes (other sandboxes may run on this machine),
    # far short of the 10000 the bomb tries
    assert int(report["bomb"]) < 1000
    assert report["after"] == "42\n"


# Every layer of README's table, by the name `rstar doctor` gives it.
README_LAYERS = (
    "worker_pid_namespace",
    "filesystem_view",
    "pid_namespace",
    "network_namespace",
    "ipc_namespace",
    "mount_namespace",
    "cgroup",
    "uid_drop",
    "user_namespace",
    "capabilities_dropped",
    "session_keyring",
    "rlimits",
    "no_new_privs",
    "landlock",
    "landlock_filesystem",
    "landlock_network",
    "landlock_signal_scope",
    "audit_hook",
    "seccomp",
)


def test_rstar_doctor_shows_every_layer_of_the_readme():
    from typer.testing import CliRunner

    from pipeline.cli import app

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## The sandbox's layers") :].split("\n\n")[2]
    shown = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    rows = {line.split("│")[1].strip() for line in shown.output.splitlines() if "│" in line}
    for layer in README_LAYERS:
        assert f"`{layer}`" in table, layer
        assert layer in rows, layer


def test_folders_on_the_way_to_python_are_the_views_own(sandbox):
    """/root (or /work) must exist for the interpreter's path to resolve; what the code finds
    there is a bare folder of the view, not the host's (its mode, owner, size and times)."""
    needs(sandbox, "filesystem_view")
    import sys

    ancestors = sorted({str(p) for p in Path(sys.base_prefix).parents if str(p) != "/"})
    ancestors += sorted({str(p) for p in REPO.parents if str(p) != "/"})
    code = (
        "import os\nroot = os.stat('/').st_dev\n"
        f"for path in {ancestors!r}:\n"
        "    s = os.stat(path)\n"
        "    print(path, s.st_dev == root, oct(s.st_mode & 0o7777), s.st_mtime)\n"
    )
    result = sandbox.run(code)
    assert result.error is None, result
    for line in result.stdout.splitlines():
        path, same_device, mode, mtime = line.split()
        host = os.stat(path)
        assert same_device == "True", line  # a folder of the view's tmpfs
        assert mode == "0o755", line
        assert float(mtime) != host.st_mtime or host.st_mode & 0o7777 != 0o755, line
    assert_pool_works(sandbox)
