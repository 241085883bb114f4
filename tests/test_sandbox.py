"""The sandbox: values, verdicts, and an escape-attempt suite.

Every escape attempt must end with a clear verdict, leave no trace outside the sandbox,
and the sandbox must still run a normal program correctly afterwards.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import textwrap
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

import psutil
import pytest

from distillery.verify.sandbox import ExecutionResult, Sandbox, SandboxError, SandboxLimits, answers_match

LIMITS = SandboxLimits(wall_time_s=1.5, cpu_time_s=1.0, memory_mb=256, max_output_bytes=4096)
SECRET_NAME, SECRET_VALUE = "DISTILLERY_TEST_SECRET_TOKEN", "sk-test-" + uuid.uuid4().hex
REPO = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def sb():
    os.environ[SECRET_NAME] = SECRET_VALUE  # present in the parent when the workers start
    sandbox = Sandbox(workers=2, limits=LIMITS)
    try:
        yield sandbox
    finally:
        sandbox.close()
        os.environ.pop(SECRET_NAME, None)


def run(sb: Sandbox, body: str, entry: str = "solution") -> ExecutionResult:
    return sb.run(textwrap.dedent(body), entry)


def assert_serving(sb: Sandbox) -> None:
    """A normal program still runs correctly (fresh constant each time)."""
    k = uuid.uuid4().int % 10_000
    r = sb.run(f"def solution():\n    return {k} * 3 + 1\n")
    assert r.status == "ok" and r.value == k * 3 + 1, r


def assert_prompt(r: ExecutionResult, slack: float = 1.5) -> None:
    assert r.wall_s < LIMITS.wall_time_s + slack, r


def worker_descendants(sb: Sandbox) -> list[psutil.Process]:
    out = []
    for pid in sb.worker_pids:
        try:
            out += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return out


# -- normal behaviour ------------------------------------------------------------------------
def test_plain_values_round_trip(sb):
    r = run(
        sb,
        """
        from fractions import Fraction
        def solution():
            return [None, True, 3, -2**100, 1.5, "h\\u00e9llo", Fraction(7, 3),
                    (1, (2, 3)), {"a": [None], 1: "x", (1, 2): 3.0}, float("inf"), -0.0]
        """,
    )
    assert r.status == "ok", r
    v = r.value
    assert v[:7] == [None, True, 3, -(2**100), 1.5, "héllo", Fraction(7, 3)]
    assert type(v[1]) is bool and type(v[6]) is Fraction and v[7] == (1, (2, 3)) and type(v[7]) is tuple
    assert v[8] == {"a": [None], 1: "x", (1, 2): 3.0}
    assert v[9] == math.inf and math.copysign(1, v[10]) == -1


def test_builtin_subclasses_and_numpy_become_plain(sb):
    r = run(
        sb,
        """
        import enum, collections
        import numpy as np
        class Color(enum.IntEnum):
            RED = 4
        P = collections.namedtuple("P", "x y")
        def solution():
            return [Color.RED, P(1, 2), collections.Counter("aab"), np.int64(7), np.float64(0.5), np.arange(3)]
        """,
    )
    assert r.status == "ok", r
    assert r.value == [4, (1, 2), {"a": 2, "b": 1}, 7, 0.5, [0, 1, 2]]
    assert [type(x) for x in r.value] == [int, tuple, dict, int, float, list]


def test_stdout_and_stderr_are_captured(sb):
    r = run(
        sb,
        """
        import sys
        def solution():
            print("hello")
            print("warn", file=sys.stderr)
            return 1
        """,
    )
    assert (r.status, r.stdout, r.stderr) == ("ok", "hello\n", "warn\n")


def test_run_many_keeps_order_and_runs_in_parallel(sb):
    programs = [f"def solution():\n    return {i} ** 2\n" for i in range(60)]
    results = sb.run_many(programs)
    assert [r.value for r in results] == [i**2 for i in range(60)]
    start = time.monotonic()
    sleepy = sb.run_many(["import time\ndef solution():\n    time.sleep(0.6)\n    return 1\n"] * 2)
    assert [r.value for r in sleepy] == [1, 1]
    assert time.monotonic() - start < 1.15  # two workers: both sleeps overlap


def test_threads_are_allowed(sb):
    r = run(
        sb,
        """
        import threading
        def solution():
            out = []
            ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            return sorted(out)
        """,
    )
    assert (r.status, r.value) == ("ok", [0, 1, 2, 3]), r


def test_syntax_error_missing_entry_and_exception(sb):
    r = sb.run("def solution(:\n    return 1\n")
    assert r.status == "syntax_error" and "SyntaxError" in r.error
    r = sb.run("def answer():\n    return 1\n")
    assert r.status == "missing_entry" and "solution()" in r.error
    r = sb.run("def answer():\n    return 5\n", entry="answer")
    assert r.value == 5
    r = run(
        sb,
        """
        def solution():
            x = 0
            return 1 / x
        """,
    )
    assert r.status == "error" and r.error.startswith("ZeroDivisionError") and "(line 4)" in r.error
    assert "1 / x" in r.traceback
    assert_serving(sb)


def test_limits_validate():
    with pytest.raises(ValueError):
        SandboxLimits(wall_time_s=0)


# -- escape attempts ---------------------------------------------------------------------------
def test_infinite_loop_is_stopped(sb):
    r = sb.run("def solution():\n    while True:\n        pass\n")
    assert r.status == "timeout" and "limit" in r.error
    assert_prompt(r)
    r = sb.run("import time\ndef solution():\n    time.sleep(60)\n")
    assert r.status == "timeout" and "wall-clock" in r.error
    assert_prompt(r)
    assert_serving(sb)


def test_fork_bomb_is_contained(sb):
    r = run(
        sb,
        """
        import os
        def solution():
            while True:
                os.fork()
        """,
    )
    assert r.status in ("error", "timeout"), r
    if sb.isolation.get("seccomp"):
        assert r.status == "error" and "PermissionError" in r.error
    assert_prompt(r)
    r = run(
        sb,
        """
        import multiprocessing
        def solution():
            p = multiprocessing.Process(target=print)
            p.start()
            return p.pid
        """,
    )
    assert r.status in ("error", "timeout"), r
    assert worker_descendants(sb) == []  # nothing survived the program
    assert_serving(sb)


def test_memory_bomb_is_stopped():
    """The memory limit, not the clock, stops them: time limits far above what filling 256 MB
    takes even on a loaded machine (the shared fixture's 1.5 s wall limit could fire first)."""
    with Sandbox(workers=1, limits=SandboxLimits(wall_time_s=60, cpu_time_s=30, memory_mb=256,
                                                  max_output_bytes=4096)) as roomy:
        r = roomy.run("def solution():\n    return bytearray(8 * 2**30)\n")
        assert r.status == "memory", r
        r = run(
            roomy,
            """
            def solution():
                hog = []
                while True:
                    hog.append(" " * 2**20)
            """,
        )
        assert r.status == "memory", r  # not "timeout": the memory limit stopped it
        assert_serving(roomy)


def test_deep_recursion(sb):
    r = sb.run("def solution():\n    return solution()\n")
    assert r.status == "error" and r.error.startswith("RecursionError")
    r = run(
        sb,
        """
        import sys
        sys.setrecursionlimit(10**7)
        def f(n):
            return f(n + 1) + 1
        def solution():
            return f(0)
        """,
    )
    # Python 3.11 keeps Python frames off the C stack: a MemoryError, a timeout or a SIGSEGV.
    assert r.status in ("crashed", "memory", "error", "timeout"), r
    assert_prompt(r)
    assert_serving(sb)


@pytest.mark.parametrize(
    "target", ["/tmp/escape_{}", str(REPO / "escape_{}"), str(Path.home() / "escape_{}")]
)
def test_writing_outside_the_working_directory_fails(sb, target):
    path = target.format(uuid.uuid4().hex)
    r = sb.run(f"def solution():\n    open({path!r}, 'w').write('x')\n    return 'written'\n")
    assert r.status == "error" and ("PermissionError" in r.error or "Read-only" in r.error), r
    assert not os.path.exists(path)
    assert_serving(sb)


def test_working_directory_is_fresh_and_private(sb):
    first = run(
        sb,
        """
        import os
        def solution():
            with open("note.txt", "w") as f:
                f.write("left behind")
            os.makedirs("kept/sub"); open("kept/sub/x", "w").close()
            os.mkdir("kept/sealed", 0)  # unreadable: cleaning must restore permissions first
            return os.getcwd()
        """,
    )
    assert first.status == "ok", first
    second = sb.run(
        f"import os\ndef solution():\n    return [os.getcwd(), os.path.exists({first.value + '/note.txt'!r}),"
        " os.listdir('.'), sorted(os.listdir('..'))]\n"
    )
    assert second.status == "ok", second
    cwd, leaked, here, siblings = second.value
    assert cwd != first.value and not leaked and here == []
    assert siblings == [os.path.basename(cwd)]  # the first program's directory is gone
    assert not os.path.exists(first.value)  # nothing of it on the host either


def test_changing_metadata_outside_fails(sb, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("data")
    victim.chmod(0o644)
    before = victim.stat()
    for call in (
        f"os.chmod({str(victim)!r}, 0o777)",
        f"os.utime({str(victim)!r}, (0, 0))",
        f"os.setxattr({str(victim)!r}, 'user.x', b'1')",
    ):
        r = sb.run(f"import os\ndef solution():\n    {call}\n")
        assert r.status == "error" and "PermissionError" in r.error, (call, r)
    after = victim.stat()
    assert (after.st_mode, after.st_mtime) == (before.st_mode, before.st_mtime)
    assert victim.read_text() == "data"


def test_file_size_limit(sb):
    r = sb.run("def solution():\n    open('big', 'wb').write(b'x' * (3 * 2**20))\n")
    assert r.status == "error" and "File too large" in r.error, r
    assert_serving(sb)


def test_environment_secrets_are_not_visible(sb):
    r = sb.run("import os\ndef solution():\n    return dict(os.environ)\n")
    assert r.status == "ok"
    assert SECRET_NAME not in r.value and SECRET_VALUE not in repr(r.value)
    assert set(r.value) <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "TMPDIR",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "MALLOC_ARENA_MAX",
    }
    # The environment of other processes is not readable either (here: this test process).
    r = sb.run(f"def solution():\n    return open('/proc/{os.getpid()}/environ', 'rb').read().decode()\n")
    if sb.isolation.get("landlock_abi"):
        assert r.status == "error" and "PermissionError" in r.error, r
    assert SECRET_VALUE not in repr(r.value)
    assert_serving(sb)


def test_network_connection_does_not_arrive(sb):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        r = run(
            sb,
            f"""
            import socket
            def solution():
                s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
                s.sendall(b"escaped")
                return "connected"
            """,
        )
        assert r.status == "error" and r.value is None, r
        with pytest.raises(TimeoutError):
            listener.accept()
        r = run(
            sb,
            f"""
            import socket
            def solution():
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))
            """,
        )
        assert r.status == "error", r
    finally:
        listener.close()
    assert_serving(sb)


def test_subprocess_and_os_system_fail(sb):
    marker = f"/tmp/escape_{uuid.uuid4().hex}"
    r = sb.run("import subprocess\ndef solution():\n    return subprocess.run(['true']).returncode\n")
    assert r.status == "error", r
    r = sb.run(f"import os\ndef solution():\n    return os.system('touch {marker}')\n")
    assert r.status == "error" or (r.status == "ok" and r.value != 0), r
    r = sb.run("import os\ndef solution():\n    os.execv('/bin/sh', ['sh', '-c', 'exit 0'])\n")
    assert r.status == "error", r
    assert not os.path.exists(marker)
    assert_serving(sb)


@pytest.mark.skipif(not LINUX, reason="seccomp is Linux-only")
def test_ctypes_escapes(sb):
    if not sb.isolation.get("seccomp"):
        pytest.skip("without seccomp a libc fork() would really fork")
    r = run(
        sb,
        """
        import ctypes
        def solution():
            libc = ctypes.CDLL(None, use_errno=True)
            return [libc.fork(), libc.unshare(0x40000000), libc.kill(-1, 0)]
        """,
    )
    assert r.status == "ok" and r.value == [-1, -1, -1], r  # fork, leave the netns, signal everyone
    r = sb.run("import ctypes\ndef solution():\n    ctypes.memset(0, 1, 8)\n")
    assert r.status == "crashed" and "SIGSEGV" in r.error, r
    assert_serving(sb)


def test_killing_the_worker_or_its_group_is_contained(sb):
    for call in ("os.kill(os.getppid(), 9)", "os.killpg(os.getpgid(os.getppid()), 9)"):
        r = sb.run(f"import os\ndef solution():\n    {call}\n    return 'still here'\n")
        assert r.status in ("error", "crashed"), r  # EPERM, or the pool noticed its worker died
        if sb.isolation.get("seccomp"):
            assert r.status == "error" and "PermissionError" in r.error
        assert_serving(sb)


def test_signalling_the_parent_process_fails(sb):
    received = []
    old = signal.signal(signal.SIGUSR1, lambda *a: received.append(a))
    try:
        r = sb.run(f"import os, signal\ndef solution():\n    os.kill({os.getpid()}, signal.SIGUSR1)\n")
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, old)
    if sb.isolation.get("seccomp") or sb.isolation.get("landlock_abi", 0) >= 6:
        assert r.status == "error" and "PermissionError" in r.error, r
        assert received == []
    assert_serving(sb)


def test_huge_output_is_capped(sb):
    r = sb.run("def solution():\n    while True:\n        print('x' * 10000)\n")
    assert r.status == "output_limit" and len(r.stdout) <= LIMITS.max_output_bytes
    assert_prompt(r, slack=0.5)
    r = sb.run("import os\ndef solution():\n    os.write(1, b'y' * 10**6)\n    return 1\n")
    assert r.status == "output_limit"
    assert_serving(sb)


def test_exits_are_reported(sb):
    r = sb.run("import sys\ndef solution():\n    sys.exit(3)\n")
    assert r.status == "exited" and "sys.exit(3)" in r.error
    r = sb.run("import os\ndef solution():\n    os._exit(0)\n")
    assert r.status == "exited" and "code 0" in r.error
    r = sb.run("import os\nos._exit(7)\ndef solution():\n    return 1\n")
    assert r.status == "exited" and "code 7" in r.error
    assert_serving(sb)


@pytest.mark.parametrize(
    "method",
    [
        "def __eq__(self, other): raise RuntimeError('boom')",
        "def __eq__(self, other):\n        while True: pass",
        "def __repr__(self):\n        while True: pass",
        "def __hash__(self): raise RuntimeError('boom')",
    ],
)
def test_hostile_return_objects_never_reach_the_parent(sb, method):
    program = f"class Evil:\n    {method}\n\ndef solution():\n    return [1, Evil()]\n"
    start = time.monotonic()
    r = sb.run(program)
    assert r.status == "unsupported_return" and "Evil" in r.error, r
    assert time.monotonic() - start < 1.0  # nothing looped: no method of Evil was called
    assert_serving(sb)


def test_hostile_int_subclass_is_copied_as_a_plain_int(sb):
    r = run(
        sb,
        """
        class Liar(int):
            def __eq__(self, other): return True
            def __repr__(self):
                while True: pass
            def __int__(self): return 99
        def solution():
            return Liar(4)
        """,
    )
    assert r.status == "ok" and type(r.value) is int and r.value == 4
    assert not answers_match(r.value, 5)


def test_too_large_or_too_deep_values(sb):
    r = sb.run("def solution():\n    return 'x' * (2 * 2**20)\n")
    assert r.status == "unsupported_return" and "too large" in r.error
    r = sb.run("def solution():\n    v = []\n    for _ in range(1000):\n        v = [v]\n    return v\n")
    assert r.status == "unsupported_return" and "deep" in r.error
    r = sb.run("def solution():\n    return {1, 2}\n")
    assert r.status == "unsupported_return" and "set" in r.error


def test_forged_result_messages_are_rejected(sb):
    """A program writing its own (malformed or absurdly nested) result to every fd."""
    for payload in ('b"[" * 200000', 'json.dumps({"status": "ok", "value": "[" * 100000}).encode()'):
        r = run(
            sb,
            f"""
            import json, os
            def solution():
                for fd in range(3, 64):
                    try:
                        os.write(fd, {payload})
                    except OSError:
                        pass
                os._exit(0)
            """,
        )
        assert r.status == "crashed" and "malformed" in r.error, r
    assert_serving(sb)


def test_pool_respawns_a_dead_worker(sb):
    victim = sb.worker_pids[0]
    before = sb.restarts
    os.kill(victim, signal.SIGKILL)
    results = sb.run_many([f"def solution():\n    return {i}\n" for i in range(6)])
    assert [r.value for r in results] == list(range(6))
    assert sb.restarts == before + 1 and victim not in sb.worker_pids


def test_a_program_whose_worker_is_killed_is_retried_once(sb):
    before = sb.restarts

    def kill_soon():
        time.sleep(0.3)
        for pid in sb.worker_pids:
            os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=kill_soon)
    t.start()
    results = sb.run_many(["import time\ndef solution():\n    time.sleep(0.8)\n    return 1\n"] * 2)
    t.join()
    assert [(r.status, r.value) for r in results] == [("ok", 1), ("ok", 1)]
    assert sb.restarts == before + 2
    assert_serving(sb)


def test_fallbacks_without_seccomp_and_landlock():
    """With the kernel layers off, sockets are refused in-process and a worker killed by its
    program is replaced: the program is reported ``crashed`` after one retry."""
    with Sandbox(workers=1, limits=LIMITS, disable=("seccomp", "landlock")) as weak:
        assert not weak.isolation["seccomp"] and not weak.isolation["landlock_abi"]
        r = weak.run("import socket\ndef solution():\n    socket.socket()\n")
        assert r.status == "error" and "network access is disabled" in r.error
        first = weak.worker_pids
        r = weak.run("import os\ndef solution():\n    os.kill(os.getppid(), 9)\n")
        assert r.status == "crashed" and "died" in r.error, r
        assert weak.restarts == 2 and weak.worker_pids != first
        assert weak.run("def solution():\n    return 7\n").value == 7
    with pytest.raises(ValueError):
        Sandbox(workers=1, disable=("everything",))


@pytest.mark.skipif(not LINUX, reason="Linux isolation layers")
def test_isolation_report(sb):
    iso = sb.isolation
    for key in ("netns", "seccomp", "landlock_abi", "capabilities_dropped", "tmpfs_mb"):
        assert key in iso
    if os.geteuid() == 0:
        assert iso["capabilities_dropped"] and not iso["rlimit_nproc_effective"]


def test_closed_sandbox_refuses_work():
    sandbox = Sandbox(workers=1, limits=LIMITS)
    pids = sandbox.worker_pids
    sandbox.close()
    sandbox.close()
    with pytest.raises(SandboxError):
        sandbox.run("def solution():\n    return 1\n")
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- answers_match ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [
        (4, 4, True),
        (4, Fraction(4, 1), True),
        (Fraction(7, 3), Fraction(14, 6), True),
        (Fraction(1, 3), Fraction(333333, 1000000), False),  # exact types compare exactly
        (0.1 + 0.2, 0.3, True),
        (0.1 + 0.2, Fraction(3, 10), True),
        (4.0000001, 4, True),
        (4.01, 4, False),
        (5.5e-17, 0, True),  # abs_tol
        (float("nan"), float("nan"), False),
        (math.inf, math.inf, True),
        (10**400, 10**400 + 1, False),
        (float(10**20), 10**20 + 1, True),
        (True, 1, False),
        (1, True, False),
        (True, True, True),
        ("42", 42, False),
        ("abc", "abc", True),
        ([1, 2.0], (1, 2), True),
        ([1, 2], [1, 2, 3], False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"b": 1}, False),
        (None, None, True),
        (None, 0, False),
    ],
)
def test_answers_match(value, reference, expected):
    assert answers_match(value, reference) is expected
