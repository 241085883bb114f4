"""The sandbox worker: a warm interpreter that forks one confined process per program.

Run as a script by :class:`distillery.verify.sandbox.Sandbox` (``python -s -P _worker.py``)
with a scrubbed environment; stdlib only. Protocol on stdin/stdout: frames of a 4-byte
big-endian length and UTF-8 JSON. The first frame from the parent is the configuration;
the worker answers ``{"isolation": {...}}`` once ready (or ``{"fatal": "..."}``), then
answers each ``{"program": str, "entry": str}`` with one result frame
(``status, value, error, traceback, stdout, stderr, wall_s, cpu_s``). EOF on stdin ends it.

Per program the worker creates a fresh working directory, forks, and in the child applies
(in order) its own process group, parent-death signal, closed file descriptors, scrubbed
environment, rlimits, dropped capabilities, Landlock and seccomp, then compiles and runs
the program and writes the tagged-JSON return value (:mod:`_wire`) to a result pipe. The
worker enforces the wall-clock limit and the output cap, kills the child's whole process
group, reaps it and empties the working area.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types

if __name__ == "__main__":  # started as a script: our siblings are not importable as a package
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, _HERE)
    import _confine
    import _wire

    sys.path.remove(_HERE)
else:  # imported for tests / introspection
    from distillery.verify.sandbox import _confine, _wire

_RESULT_STATUSES = ("ok", "error", "syntax_error", "missing_entry", "unsupported_return", "memory", "exited")
_MIB = 1 << 20


# -- framing ------------------------------------------------------------------------------
def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        data = os.read(fd, min(n - got, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def read_frame(fd: int) -> dict | None:
    """Read one frame from ``fd``; ``None`` at EOF."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, int.from_bytes(head, "big"))
    return None if body is None else json.loads(body)


def write_frame(fd: int, obj: dict) -> None:
    """Write ``obj`` as one frame to ``fd``."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    data = len(body).to_bytes(4, "big") + body
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- the confined child -------------------------------------------------------------------
def _close_fds_except(keep: set[int]) -> None:
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def _disable_sockets() -> None:
    """In-process fallback when seccomp is unavailable: make socket creation raise."""
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    socket.socket = refuse  # type: ignore[assignment,misc]
    socket.socketpair = refuse  # type: ignore[assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.create_server = refuse  # type: ignore[assignment]


def _confine_child(cfg: dict, workdir: str, worker_pid: int) -> str | None:
    """Apply every isolation layer the worker found usable; the error text of the first failure."""
    limits = cfg["limits"]
    iso = cfg["isolation"]
    os.setpgid(0, 0)
    _confine.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != worker_pid:
        os._exit(1)
    os.chdir(workdir)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir  # the rest was scrubbed in the worker
    tempfile.tempdir = workdir
    cpu = max(1, math.ceil(limits["cpu_time_s"]))
    rlimits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (limits["file_size_mb"] * _MIB,) * 2),
        (resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * _MIB,) * 2),
    ]
    if iso.get("rlimit_nproc") is not None:
        rlimits.append((resource.RLIMIT_NPROC, (iso["rlimit_nproc"],) * 2))
    for which, value in rlimits:
        resource.setrlimit(which, value)
    if iso["landlock_abi"]:
        err = _confine.landlock_restrict(cfg["ruleset_fd"])
        if err:
            return err
        os.close(cfg["ruleset_fd"])
    if iso["seccomp"]:
        err = cfg["seccomp_template"].install(os.getpid())
        if err:
            return err
    else:
        _disable_sockets()
    return None


def _error_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<program>"]
    if lines:
        text += f" (line {lines[-1]})"
    return text[:2000]


def _traceback_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))[-4000:]
    except Exception:
        return ""


def _execute(program: str, entry: str, max_value_bytes: int) -> dict:
    """Compile and run ``program``, call ``entry()``, encode the value; a result dict."""
    import linecache

    linecache.cache["<program>"] = (len(program), None, program.splitlines(True), "<program>")
    try:
        code = compile(program, "<program>", "exec")
    except (SyntaxError, ValueError) as exc:
        return {"status": "syntax_error", "error": _error_text(exc)[:2000]}
    except MemoryError:
        return {"status": "memory", "error": "MemoryError while compiling"}
    except RecursionError as exc:
        return {"status": "syntax_error", "error": _error_text(exc)}
    module = types.ModuleType("__sandbox__")  # a real module, so dataclasses/pickle/typing work
    sys.modules["__sandbox__"] = module
    namespace = module.__dict__
    stage = "module"
    try:
        exec(code, namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            return {"status": "missing_entry", "error": f"the program defines no function {entry}()"}
        stage = "entry"
        value = fn()
        stage = "encode"
        return {"status": "ok", "value": _wire.dumps(value, max_value_bytes)}
    except _wire.UnsupportedValue as exc:
        return {"status": "unsupported_return", "error": str(exc)[:2000]}
    except MemoryError as exc:
        exc.__traceback__ = None
        namespace.clear()
        gc.collect()
        return {"status": "memory", "error": f"MemoryError during {stage} (memory limit)"}
    except SystemExit as exc:
        return {"status": "exited", "error": f"the program called sys.exit({exc.code!r})"[:500]}
    except BaseException as exc:
        if stage == "encode":
            return {"status": "unsupported_return", "error": f"value conversion failed: {_error_text(exc)}"}
        return {"status": "error", "error": _error_text(exc), "traceback": _traceback_text(exc)}


def _child_main(cfg: dict, req: dict, workdir: str, fds: dict[str, int], worker_pid: int) -> None:
    """Body of the forked child; never returns."""
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds["out"], 1)
        os.dup2(fds["err"], 2)
        keep = {fds["res"]}
        if cfg["isolation"]["landlock_abi"]:
            keep.add(cfg["ruleset_fd"])
        _close_fds_except(keep)
        err = _confine_child(cfg, workdir, worker_pid)
        if err:
            result = {"status": "crashed", "error": f"sandbox confinement failed: {err}"}
        else:
            result = _execute(
                req["program"], req.get("entry") or "solution", cfg["limits"]["max_value_bytes"]
            )
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        view = memoryview(json.dumps(result).encode())
        while view:
            view = view[os.write(fds["res"], view) :]
        os.close(fds["res"])
    except BaseException:
        os._exit(70)
    os._exit(0)


# -- the worker side of one program ------------------------------------------------------
def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _clean_dir(path: str) -> None:
    """Remove everything inside ``path`` (the worker's working area), whatever its permissions.

    The worker holds no capabilities, so directories a program made unreadable are first
    given back their owner's permissions.
    """

    def retry(func, failed_path, _exc):
        try:
            os.chmod(os.path.dirname(failed_path) or failed_path, 0o700)
            os.chmod(failed_path, 0o700)
        except OSError:
            pass
        if func is os.rmdir or os.path.isdir(failed_path) and not os.path.islink(failed_path):
            shutil.rmtree(failed_path, ignore_errors=True)
        else:
            try:
                os.unlink(failed_path)
            except OSError:
                pass

    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            os.chmod(full, 0o700)
            shutil.rmtree(full, onerror=retry)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


def run_program(cfg: dict, req: dict) -> dict:
    """Fork a confined child for ``req``, supervise it, return the result frame."""
    limits = cfg["limits"]
    base = cfg["base"]
    cfg["runs"] = cfg.get("runs", 0) + 1
    workdir = os.path.join(base, f"p{cfg['runs']}")
    os.mkdir(workdir, 0o700)
    pipes = {k: os.pipe() for k in ("out", "err", "res")}
    worker_pid = os.getpid()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        _child_main(cfg, req, workdir, {k: w for k, (_, w) in pipes.items()}, worker_pid)
    for _, w in pipes.values():
        os.close(w)
    readers = {r: k for k, (r, _) in pipes.items()}
    bufs = {k: bytearray() for k in pipes}
    poller = select.poll()
    for r in readers:
        poller.register(r, select.POLLIN)
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pass
    deadline = start + limits["wall_time_s"]
    max_out, max_res = limits["max_output_bytes"], limits["max_value_bytes"] + 4096
    verdict: tuple[str, str] | None = None
    exited = False
    while True:
        now = time.monotonic()
        if now >= deadline:
            verdict = ("timeout", f"exceeded {float(limits['wall_time_s'])} s wall-clock limit")
            break
        wait_ms = (deadline - now) * 1000 if pidfd is not None else min(deadline - now, 0.005) * 1000
        for fd, _ in poller.poll(max(1, math.ceil(wait_ms))):
            if fd == pidfd:
                exited = True
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                poller.unregister(fd)
                del readers[fd]
                continue
            bufs[readers[fd]] += data
        if len(bufs["out"]) + len(bufs["err"]) > max_out:
            verdict = ("output_limit", f"stdout+stderr exceeded {max_out} bytes")
            break
        if len(bufs["res"]) > max_res:
            verdict = ("crashed", "result message exceeded its size limit")
            break
        if pidfd is None and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            exited = True
        res_fd = pipes["res"][0]
        if exited or (res_fd not in readers and bufs["res"]):
            break
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for fd in list(readers):  # drain what the (now dead) child left in its pipes
        os.set_blocking(fd, False)
        try:
            while len(bufs[readers[fd]]) <= max_res and (data := os.read(fd, 1 << 16)):
                bufs[readers[fd]] += data
        except BlockingIOError:
            pass
    if verdict is None and len(bufs["out"]) + len(bufs["err"]) > max_out:
        verdict = ("output_limit", f"stdout+stderr exceeded {max_out} bytes")
    _, status, rusage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    for r, _ in pipes.values():
        os.close(r)
    if pidfd is not None:
        os.close(pidfd)
    try:  # the common case: the program left nothing behind
        os.rmdir(workdir)
    except OSError:
        pass
    if os.listdir(base):
        _clean_dir(base)
    out = {
        "wall_s": wall,
        "cpu_s": rusage.ru_utime + rusage.ru_stime,
        "stdout": bytes(bufs["out"][:max_out]).decode("utf-8", "replace"),
        "stderr": bytes(bufs["err"][:max_out]).decode("utf-8", "replace"),
        "value": None,
        "error": None,
        "traceback": None,
    }
    if verdict is None and bufs["res"]:
        try:
            result = json.loads(bytes(bufs["res"]))
            if result.get("status") not in _RESULT_STATUSES + ("crashed",):
                raise ValueError("unknown status")
            out.update(
                status=result["status"],
                value=result.get("value") if isinstance(result.get("value"), str) else None,
                error=str(result["error"])[:2000] if result.get("error") is not None else None,
                traceback=str(result["traceback"])[:4000] if result.get("traceback") else None,
            )
            return out
        except (ValueError, TypeError, AttributeError, RecursionError):
            verdict = ("crashed", "malformed result message from the program's process")
    if verdict is None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                verdict = ("timeout", f"exceeded {math.ceil(limits['cpu_time_s'])} s CPU-time limit")
            else:
                verdict = ("crashed", f"killed by {_signal_name(sig)}")
        else:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
            verdict = ("exited", f"the process exited with code {code} before returning")
    out.update(status=verdict[0], error=verdict[1])
    return out


# -- worker setup -------------------------------------------------------------------------
def _count_user_processes(uid: int) -> int:
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def setup(cfg: dict) -> dict:
    """Enter namespaces, mount the working area, preload modules, build the Landlock ruleset.

    Returns the isolation report (also stored in ``cfg["isolation"]``).
    """
    iso: dict = {"platform": sys.platform}
    linux = sys.platform.startswith("linux")
    if linux and cfg.get("namespaces", True):
        iso.update(_confine.enter_private_namespaces())
    else:
        iso.update(netns=False, mountns=False, ipcns=False, userns=False)
    iso["tmpfs_mb"] = None
    if iso.get("mountns"):
        err = _confine.mount_tmpfs(cfg["base"], cfg["limits"]["disk_mb"])
        if err is None:
            iso["tmpfs_mb"] = cfg["limits"]["disk_mb"]
        else:
            iso["tmpfs_error"] = err
    failed = []
    for name in cfg.get("preload", []):
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    iso["preload_failed"] = failed
    iso["capabilities_dropped"] = linux and _confine.has_capabilities()  # dropped below
    iso["seccomp"] = linux and cfg.get("seccomp", True) and _confine.seccomp_supported()
    abi = _confine.landlock_abi() if linux and cfg.get("landlock", True) else 0
    iso["landlock_abi"] = abi
    if abi:
        try:
            own = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
            read_paths = list(dict.fromkeys(cfg["read_paths"] + own + [p for p in sys.path if p]))
            fd, skipped = _confine.landlock_ruleset(read_paths, [cfg["base"]], abi)
            cfg["ruleset_fd"] = fd
            iso["landlock_skipped"] = skipped
        except OSError as exc:
            iso["landlock_abi"] = 0
            iso["landlock_error"] = str(exc)
    # Lock the worker itself down before it forks anything: no capabilities (as root too),
    # no_new_privs, and the worker-level seccomp filter, all inherited by every program.
    if iso["capabilities_dropped"] and not _confine.drop_capabilities():
        raise OSError("cannot drop capabilities")
    if linux and not _confine.set_no_new_privs():
        raise OSError("cannot set no_new_privs")
    if iso["seccomp"]:
        cfg["seccomp_template"] = _confine.SeccompTemplate()
        err = _confine.install_seccomp(_confine.seccomp_program(None))
        if err:  # e.g. a container runtime refusing filters: fall back, and say so
            iso["seccomp"] = False
            iso["seccomp_error"] = err
    os.environ.clear()  # programs inherit exactly this environment
    os.environ.update(cfg["env"])
    root = os.geteuid() == 0
    iso["rlimit_nproc"] = None
    if not iso["seccomp"] and not root:
        iso["rlimit_nproc"] = _count_user_processes(os.getuid()) + cfg["limits"]["max_processes"]
    iso["rlimit_nproc_effective"] = not root and iso["rlimit_nproc"] is not None
    cfg["isolation"] = iso
    return iso


def main() -> None:
    """Serve programs until stdin closes."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    cfg = read_frame(in_fd)
    if cfg is None:
        return
    try:
        iso = setup(cfg)
    except Exception as exc:
        write_frame(out_fd, {"fatal": f"worker setup failed: {type(exc).__name__}: {exc}"})
        return
    probe_req = {"program": "def solution():\n    return 1\n", "entry": "solution"}
    probe = run_program(cfg, probe_req)
    if probe["status"] != "ok" and iso["landlock_abi"]:  # a kernel refusing Landlock: go on without it
        iso["landlock_abi"], iso["landlock_error"] = 0, str(probe["error"])
        probe = run_program(cfg, probe_req)
    if probe["status"] != "ok":
        write_frame(
            out_fd, {"fatal": f"probe program failed: {probe['status']}: {probe['error']}", "isolation": iso}
        )
        return
    gc.collect()
    gc.freeze()
    write_frame(out_fd, {"isolation": iso})
    while (req := read_frame(in_fd)) is not None:
        try:
            result = run_program(cfg, req)
        except Exception as exc:  # a bug of ours, not the program's: report it and keep serving
            result = {
                "status": "crashed",
                "error": f"sandbox worker error: {type(exc).__name__}: {exc}",
                "value": None,
                "stdout": "",
                "stderr": "",
                "wall_s": 0.0,
                "cpu_s": 0.0,
                "traceback": None,
            }
        write_frame(out_fd, result)


if __name__ == "__main__":
    main()
