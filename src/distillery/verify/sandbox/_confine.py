"""Linux confinement primitives of the sandbox, stdlib only (``ctypes`` system calls).

This module is imported by the sandbox worker (a separate interpreter started with
``python -s -P``), so it must not import anything outside the standard library. Every
function either applies one layer or reports that it cannot; callers decide what to do.

Layers (kernel interfaces, see the man pages of the same names):

- ``unshare(2)`` with ``CLONE_NEWNET`` / ``CLONE_NEWNS`` / ``CLONE_NEWIPC``: a network
  namespace holding only a downed loopback, a private mount namespace (to mount a
  size-capped ``tmpfs`` for working directories) and private System V IPC.
- ``seccomp(2)`` in filter mode (classic-BPF programs, ``SECCOMP_MODE_FILTER``), in two
  stacked filters: the worker's (no ``socket``, ``execve``, ``ptrace``, namespace/mount
  calls, io_uring, bpf, System V IPC...) and each program's (no process creation:
  ``fork``/``vfork``/``clone`` without ``CLONE_THREAD``; no signals to other processes).
- Landlock (``landlock(7)``, ABI 1-7): read-only file access beneath an allow-list of
  paths, writes only beneath the working directory, no TCP bind/connect (ABI >= 4), no
  signals or abstract unix sockets outside the process's own domain (ABI >= 6).
- ``capset(2)``: drop every capability (matters when running as root).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

LINUX = sys.platform.startswith("linux")

_libc = ctypes.CDLL(None, use_errno=True)
if LINUX:  # resolve every symbol now: a forked child inherits the lookups
    _libc.syscall.restype = ctypes.c_long
    _libc.prctl.restype = ctypes.c_int
    _libc.unshare.restype = ctypes.c_int
    _libc.mount.restype = ctypes.c_int
    _libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    _libc.capset.restype = ctypes.c_int

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 16384, 1 << 18

_PR_SET_PDEATHSIG = 1
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2

_EPERM, _ENOSYS = 1, 38

# System call numbers: x86_64 (arch/x86/entry/syscalls/syscall_64.tbl) and the generic table
# used by aarch64 (include/uapi/asm-generic/unistd.h), as "name x86_64 generic" rows;
# "-": the call does not exist there.
_TABLE = """
socket 41 198; socketpair 53 199; clone 56 220; clone3 435 435; fork 57 -; vfork 58 -
execve 59 221; execveat 322 281; kill 62 129; tkill 200 130; tgkill 234 131
rt_sigqueueinfo 129 138; rt_tgsigqueueinfo 297 240; pidfd_open 434 434; pidfd_send_signal 424 424
pidfd_getfd 438 438; ptrace 101 117; process_vm_readv 310 270; process_vm_writev 311 271
mount 165 40; umount2 166 39; pivot_root 155 41; chroot 161 51; unshare 272 97; setns 308 268
open_tree 428 428; move_mount 429 429; fsopen 430 430; fsmount 432 432; mount_setattr 442 442
bpf 321 280; perf_event_open 298 241; userfaultfd 323 282; io_uring_setup 425 425
io_uring_enter 426 426; io_uring_register 427 427; keyctl 250 219; add_key 248 217
request_key 249 218; kexec_load 246 104; init_module 175 105; finit_module 313 273; reboot 169 142
swapon 167 224; shmget 29 194; shmat 30 196; semget 64 190; msgget 68 186; mq_open 240 180
chmod 90 -; fchmod 91 52; fchmodat 268 53; fchmodat2 452 452; chown 92 -; fchown 93 55
lchown 94 -; fchownat 260 54; utime 132 -; utimes 235 -; utimensat 280 88; futimesat 261 -
setxattr 188 5; lsetxattr 189 6; fsetxattr 190 7; removexattr 197 14; lremovexattr 198 15
fremovexattr 199 16; setxattrat 463 463; removexattrat 466 466; file_setattr 469 469; ioctl 16 29
"""
_ROWS = [row.split() for line in _TABLE.strip().splitlines() for row in line.split(";")]
_TABLES = {
    arch: {name: (None if nums[i] == "-" else int(nums[i])) for name, *nums in _ROWS}
    for i, arch in enumerate(("x86_64", "aarch64"))
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # same number on both tables

_MACHINE = platform.machine()
_SYSCALLS = _TABLES.get(_MACHINE) if LINUX else None


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


# -- namespaces ---------------------------------------------------------------------------
def unshare(flags: int) -> str | None:
    """``unshare(2)`` the calling (single-threaded) process; ``None`` on success, else the error text."""
    if not LINUX:
        return "namespaces are Linux-only"
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        return _errno_text()
    return None


def enter_private_namespaces() -> dict[str, str | bool]:
    """Move the calling process into new network and IPC namespaces, and a private mount namespace.

    Tries the namespaces one by one, and when the process may not create them (no
    ``CAP_SYS_ADMIN``) retries inside a new user namespace (unprivileged user namespaces).

    Returns:
        ``{"netns": bool, "mountns": bool, "ipcns": bool, "userns": bool, "netns_error": str, ...}``.
    """
    out: dict[str, str | bool] = {"userns": False}
    wanted = {"netns": CLONE_NEWNET, "mountns": CLONE_NEWNS, "ipcns": CLONE_NEWIPC}
    for key, flag in wanted.items():
        err = unshare(flag)
        out[key] = err is None
        if err:
            out[key + "_error"] = err
    if not out["netns"]:
        uid, gid = os.getuid(), os.getgid()
        if unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC) is None:
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{gid} {gid} 1")
            except OSError as exc:  # the namespaces exist even if the maps cannot be written
                out["userns_error"] = str(exc)
            out.update(userns=True, netns=True, mountns=True, ipcns=True)
    if out["mountns"]:
        # Stop our mounts from propagating back to the host's mount namespace.
        if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            out["mountns"] = False
            out["mountns_error"] = "cannot make / private: " + _errno_text()
    return out


def mount_tmpfs(path: str, size_mb: int) -> str | None:
    """Mount a ``tmpfs`` of at most ``size_mb`` MiB on ``path`` (``nosuid,nodev,noexec``).

    Needs a private mount namespace (:func:`enter_private_namespaces`). Returns ``None`` on
    success, else the error text.
    """
    opts = f"size={int(size_mb)}m,mode=0700".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, opts) != 0:
        return _errno_text()
    return None


# -- process attributes -------------------------------------------------------------------
def set_parent_death_signal(sig: int) -> None:
    """``prctl(PR_SET_PDEATHSIG)``: receive ``sig`` when the parent (thread) dies (Linux only)."""
    if LINUX:
        _libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0)


def set_no_new_privs() -> bool:
    """``prctl(PR_SET_NO_NEW_PRIVS, 1)``: required for unprivileged seccomp and Landlock."""
    return LINUX and _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0) == 0


def has_capabilities() -> bool:
    """Whether the process holds any effective capability (true for root)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16) != 0
    except OSError:
        pass
    return os.geteuid() == 0


def drop_capabilities() -> bool:
    """Clear the effective, permitted and inheritable capability sets (``capset(2)``, v3)."""
    header = struct.pack("Ii", 0x20080522, 0)
    data = bytes(24)  # two __user_cap_data_struct {effective, permitted, inheritable}, all zero
    hbuf, dbuf = ctypes.create_string_buffer(header), ctypes.create_string_buffer(data)
    return _libc.capset(hbuf, dbuf) == 0


# -- seccomp ------------------------------------------------------------------------------
_LD_W_ABS, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; args are u64, low word first (LE)

# Denied in the worker itself once it is set up (and so in every program it forks): calls
# neither the worker nor a program needs.
WORKER_DENIED = (
    "socket socketpair execve execveat rt_sigqueueinfo rt_tgsigqueueinfo pidfd_getfd ptrace "
    "process_vm_readv process_vm_writev mount umount2 pivot_root chroot unshare setns open_tree "
    "move_mount fsopen fsmount mount_setattr bpf perf_event_open userfaultfd io_uring_setup "
    "io_uring_enter io_uring_register keyctl add_key request_key kexec_load init_module finit_module "
    "reboot swapon shmget shmat semget msgget mq_open"
).split()
# Denied on top of that in each program's process: what the worker needs to supervise
# programs, and metadata changes Landlock does not cover (mode, owner, times, xattrs).
CHILD_DENIED = (
    "fork vfork pidfd_open pidfd_send_signal chmod fchmod fchmodat fchmodat2 chown fchown lchown "
    "fchownat utime utimes utimensat futimesat setxattr lsetxattr fsetxattr removexattr lremovexattr "
    "fremovexattr setxattrat removexattrat file_setattr"
).split()
# ioctl requests that change inode flags (chattr) or fs attributes: FS_IOC_SETFLAGS (64- and
# 32-bit encodings) and FS_IOC_FSSETXATTR.
_IOCTL_DENIED = (0x40086602, 0x40046602, 0x401C5820)


def seccomp_supported() -> bool:
    """Whether this architecture has a syscall table here (x86_64, aarch64) and Linux seccomp."""
    return _SYSCALLS is not None and os.path.exists("/proc/self/status")


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(own_pid: int | None = None) -> bytes:
    """A classic-BPF seccomp filter (``struct sock_filter[]``).

    ``own_pid=None`` gives the worker's filter: ``EPERM`` for :data:`WORKER_DENIED`
    (sockets, exec, ptrace, namespaces, mounts, io_uring, bpf, System V IPC creation...).
    With ``own_pid`` it gives the program's filter, stacked on the worker's: ``EPERM`` for
    :data:`CHILD_DENIED`, for ``clone`` unless it makes a thread, for ``ioctl`` requests
    changing inode flags, and for
    ``kill``/``tkill``/``tgkill`` aimed at any process but ``own_pid`` (or its process
    group); ``ENOSYS`` for ``clone3`` so that glibc falls back to ``clone``. In both, a
    system call of a foreign ABI (i386, x32) kills the process.

    Raises:
        RuntimeError: the architecture has no table here.
    """
    if _SYSCALLS is None:
        raise RuntimeError(f"seccomp filter not available on {_MACHINE}")
    nr = _SYSCALLS
    prog = [
        _ins(_LD_W_ABS, _OFF_ARCH),
        _ins(_JEQ, _AUDIT_ARCH[_MACHINE], 1, 0),
        _ins(_RET, _RET_KILL_PROCESS),
    ]
    prog.append(_ins(_LD_W_ABS, _OFF_NR))
    if _MACHINE == "x86_64":  # x32 ABI syscalls have bit 30 set
        prog += [_ins(_JGE, 0x40000000, 0, 1), _ins(_RET, _RET_KILL_PROCESS)]
    for name in WORKER_DENIED if own_pid is None else CHILD_DENIED:
        if nr[name] is not None:
            prog += [_ins(_JEQ, nr[name], 0, 1), _ins(_RET, _RET_ERRNO | _EPERM)]
    if own_pid is not None:
        prog += [_ins(_JEQ, nr["clone3"], 0, 1), _ins(_RET, _RET_ERRNO | _ENOSYS)]
        # clone(flags, ...): allowed only for threads.
        prog += [
            _ins(_JEQ, nr["clone"], 0, 4),
            _ins(_LD_W_ABS, _OFF_ARG0),
            _ins(_JSET, CLONE_THREAD, 1, 0),
            _ins(_RET, _RET_ERRNO | _EPERM),
            _ins(_RET, _RET_ALLOW),
        ]
        # ioctl(fd, request, ...): no inode-flag changes.
        n = len(_IOCTL_DENIED)
        block = [_ins(_LD_W_ABS, _OFF_ARG0 + 8)]
        block += [_ins(_JEQ, v, n - i, 0) for i, v in enumerate(_IOCTL_DENIED)]
        block += [_ins(_RET, _RET_ALLOW), _ins(_RET, _RET_ERRNO | _EPERM)]
        prog += [_ins(_JEQ, nr["ioctl"], 0, len(block)), *block]
        # kill(pid, sig) / tkill(tid, sig) / tgkill(tgid, tid, sig): first argument must be us.
        for name, allowed in (
            ("kill", (own_pid, 0, -own_pid)),
            ("tkill", (own_pid,)),
            ("tgkill", (own_pid,)),
        ):
            n = len(allowed)
            block = [_ins(_LD_W_ABS, _OFF_ARG0)]
            block += [_ins(_JEQ, v, n - i, 0) for i, v in enumerate(allowed)]
            block += [_ins(_RET, _RET_ERRNO | _EPERM), _ins(_RET, _RET_ALLOW)]
            prog += [_ins(_JEQ, nr[name], 0, len(block))] + block
    prog.append(_ins(_RET, _RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompTemplate:
    """The program's seccomp filter, prepared in the worker and finished in each child.

    Building the BPF bytes and the ctypes buffers once in the worker leaves the forked child
    only its own pid to patch in and one ``prctl`` to make (fewer copy-on-write page faults).
    """

    def __init__(self) -> None:
        marker = 0x7A5EB0D1  # stands for the child's pid while the filter is built
        program = seccomp_program(marker)
        self._offsets: list[tuple[int, int]] = []  # (byte offset of k, sign)
        for off in range(0, len(program), 8):
            k = struct.unpack_from("I", program, off + 4)[0]
            if k == marker:
                self._offsets.append((off + 4, 1))
            elif k == (-marker) & 0xFFFFFFFF:
                self._offsets.append((off + 4, -1))
        self._buf = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self._ref = ctypes.byref(self._fprog)
        self._mode = ctypes.c_ulong(_SECCOMP_MODE_FILTER)

    def install(self, own_pid: int) -> str | None:
        """Patch ``own_pid`` in and install the filter; ``None`` on success, else the error text.

        Requires ``no_new_privs`` (set in the worker) or ``CAP_SYS_ADMIN``.
        """
        for off, sign in self._offsets:
            struct.pack_into("I", self._buf, off, (sign * own_pid) & 0xFFFFFFFF)
        if _libc.prctl(_PR_SET_SECCOMP, self._mode, self._ref, 0, 0) != 0:
            return "PR_SET_SECCOMP: " + _errno_text()
        return None


def install_seccomp(program: bytes) -> str | None:
    """Install a BPF ``program`` (from :func:`seccomp_program`) on the calling thread.

    Sets ``no_new_privs`` first. Returns ``None`` on success, else the error text.
    """
    if not set_no_new_privs():
        return "PR_SET_NO_NEW_PRIVS: " + _errno_text()
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0) != 0:
        return "PR_SET_SECCOMP: " + _errno_text()
    return None


# -- Landlock -----------------------------------------------------------------------------
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_FS_V1 = (1 << 13) - 1
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1, 2
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1, 2
_LL_RULE_PATH_BENEATH = 1
_O_PATH = getattr(os, "O_PATH", 0o10000000)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable or disabled."""
    if _SYSCALLS is None:
        return 0
    abi = _libc.syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(abi), 0)


def _handled_fs(abi: int) -> int:
    rights = _LL_FS_V1
    if abi >= 2:
        rights |= _LL_REFER
    if abi >= 3:
        rights |= _LL_TRUNCATE
    if abi >= 5:
        rights |= _LL_IOCTL_DEV
    return rights


def landlock_ruleset(read_paths: list[str], write_paths: list[str], abi: int) -> tuple[int, list[str]]:
    """Create a Landlock ruleset fd: read beneath ``read_paths``, everything beneath ``write_paths``.

    Every other file-system access is denied, and with ABI >= 4 all TCP bind/connect, with
    ABI >= 6 signals and abstract unix sockets leaving the domain. Paths that do not exist
    are skipped. The fd is meant to be created once and applied with
    :func:`landlock_restrict` in each confined process.

    Returns:
        ``(fd, skipped)``: the ruleset fd and the paths that could not be added.

    Raises:
        OSError: the ruleset cannot be created.
    """
    fs = _handled_fs(abi)
    net = (_LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL) if abi >= 6 else 0
    attr = ctypes.create_string_buffer(struct.pack("QQQ", fs, net, scoped), 24)
    fd = _libc.syscall(_LANDLOCK_CREATE, attr, ctypes.c_size_t(24), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset: " + _errno_text())
    skipped: list[str] = []
    read_dir = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
    for path, write in [(p, False) for p in read_paths] + [(p, True) for p in write_paths]:
        try:
            pfd = os.open(path, _O_PATH | os.O_CLOEXEC)
        except OSError:
            skipped.append(path)
            continue
        try:
            is_dir = os.path.isdir(path)
            if write:
                allowed = fs if is_dir else fs & (_LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE)
            else:
                allowed = read_dir if is_dir else _LL_EXECUTE | _LL_READ_FILE
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, pfd), 12)
            if (
                _libc.syscall(
                    _LANDLOCK_ADD_RULE,
                    ctypes.c_int(fd),
                    ctypes.c_int(_LL_RULE_PATH_BENEATH),
                    rule,
                    ctypes.c_uint32(0),
                )
                != 0
            ):
                skipped.append(path)
        finally:
            os.close(pfd)
    return int(fd), skipped


def landlock_restrict(ruleset_fd: int) -> str | None:
    """Confine the calling thread to ``ruleset_fd``'s rules (``landlock_restrict_self``).

    Sets ``no_new_privs`` first. Returns ``None`` on success, else the error text.
    """
    if not set_no_new_privs():
        return "PR_SET_NO_NEW_PRIVS: " + _errno_text()
    if _libc.syscall(_LANDLOCK_RESTRICT, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)) != 0:
        return "landlock_restrict_self: " + _errno_text()
    return None
