"""Sandboxed execution of untrusted Python (model-generated code, the agent's ``python`` tool).

``run_python(source, limits, stdin)`` runs ``source`` in a fresh ``python -I`` interpreter and
returns a ``SandboxResult``; ``run_many`` runs a batch through a bounded worker pool. The
containment layers (see docs/sandbox.md for what each guarantees and what it does not):

* a new session / process group, SIGKILLed as a whole on wall timeout;
* when the kernel allows it (root, or unprivileged user namespaces): new PID, network and mount
  namespaces. The code runs two levels below a PID-1 reaper, so every process it spawns dies
  with the sandbox even if it escaped the process group; the network namespace has no
  interfaces but a down loopback; every mount is remounted read-only except the throwaway
  working directory;
* as root, the code runs under a throwaway unprivileged uid/gid, so RLIMIT_NPROC bounds its
  processes and it cannot signal the harness;
* RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE=0;
* an audit hook (cannot be removed from Python) that refuses sockets, signals to processes
  outside the sandbox and, when the network namespace is not available, ``ctypes``;
* HOME/TMPDIR inside a temporary working directory that is removed afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "killed"]


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    wall_time: float = 10.0  # seconds before the whole process tree is SIGKILLed
    cpu_time: int = 10  # RLIMIT_CPU seconds (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS of the user code, MiB
    max_processes: int = 32  # RLIMIT_NPROC (per sandbox uid; enforced only when running as root)
    max_file_mb: int = 16  # RLIMIT_FSIZE: the largest file the code may write, MiB
    max_disk_mb: int = 64  # size of the tmpfs working directory (when mount namespaces are available)
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 64_000  # stdout and stderr each truncated to this many bytes
    namespaces: bool = True  # use PID/network/mount namespaces when the kernel allows it
    drop_privileges: bool = True  # when root, run the code as a throwaway unprivileged uid

    def __post_init__(self) -> None:
        for name in (
            "wall_time",
            "cpu_time",
            "memory_mb",
            "max_processes",
            "max_file_mb",
            "max_disk_mb",
            "max_open_files",
            "max_output_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class SandboxResult:
    """Outcome of one run. ``status`` is ``ok`` only for exit code 0 within every limit."""

    status: Status
    stdout: str
    stderr: str
    exit_code: int | None  # process exit code, or -signal when killed by a signal; None on timeout
    wall_time: float
    truncated: bool = False  # stdout or stderr was cut at max_output_bytes
    isolation: list[str] = field(default_factory=list)  # the layers that were in force

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


# Runs inside the sandbox interpreter (python -I -c BOOTSTRAP CONFIG_JSON): sets up the
# namespaces, limits and guards, then executes the user file as __main__. Kept as plain source so
# that nothing from the harness' environment (site-packages, cwd) is imported before user code.
BOOTSTRAP = r"""
import ctypes, json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
layers = []
libc = ctypes.CDLL(None, use_errno=True)
NEWNS, NEWUSER, NEWPID, NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
is_root = os.geteuid() == 0
can_drop = not cfg["hide"]  # the uid switch needs the interpreter readable by an unprivileged uid
ns = False
if cfg["namespaces"]:
    flags = NEWNS | NEWPID | NEWNET
    if is_root:
        ns = libc.unshare(flags) == 0
    else:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(flags | NEWUSER) == 0:
            # Map our own uid/gid into the new user namespace (unmapped ids cannot create files).
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write("%d %d 1" % (uid, uid))
                with open("/proc/self/gid_map", "w") as f:
                    f.write("%d %d 1" % (gid, gid))
            except OSError:
                pass
            ns = True
            layers.append("user-namespace")
    if ns:
        layers += ["pid-namespace", "net-namespace", "mount-namespace"]

def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    return libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data))

def wait_status(pid):
    while True:
        try:
            _, st = os.waitpid(pid, 0)
            return st
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue

def plan_user_layers():
    drop = is_root and cfg["uid"] is not None and can_drop
    layers.extend((["unprivileged-uid"] if drop else []) + ["rlimits", "audit-hook"])
    return drop

# P: the process the harness started. It forks the namespace init (or, without namespaces, the
# user process directly) and reports the final status on status_fd.
if not ns:
    drop = plan_user_layers()
child = os.fork()
if child:
    st = wait_status(child)
    os.write(status_fd, (json.dumps({"init" if ns else "user": st, "layers": layers}) + "\n").encode())
    os._exit(0)
if ns:
    # I: PID 1 of the new namespace. When it exits the kernel kills every process in it; it
    # dies with P (PDEATHSIG) so a SIGKILL of P's process group takes the whole tree down.
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    work = cfg["workdir"]
    # Only touch mounts once propagation is private: otherwise a remount would reach the host.
    private = mount(None, "/", None, MS_REC | MS_PRIVATE) == 0
    if private and cfg["hide"]:
        # The interpreter lives under a directory the sandbox uid may not traverse (e.g. /root):
        # cover that directory with an empty tmpfs and bind back only the interpreter's tree.
        os.umask(0o022)
        fds = {p: os.open(p, os.O_PATH) for p in cfg["expose"]}
        hidden = all(mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m") == 0
                     for h in cfg["hide"])
        for p, fd in fds.items():
            os.makedirs(p, exist_ok=True)
            hidden = hidden and mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC) == 0
            os.close(fd)
        can_drop = hidden
        if hidden:
            layers.append("hidden:" + ",".join(cfg["hide"]))
    # The working directory becomes a size-capped tmpfs holding a copy of the script, so the code
    # can neither fill the host's disk nor leave anything behind it.
    workdir_ok = False
    if private:
        with open(cfg["script"], "rb") as f:
            script_bytes = f.read()
        opts = "size=%dm,mode=700" % cfg["limits"]["max_disk_mb"]
        if mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, opts) == 0:
            try:
                os.umask(0o077)
                os.mkdir(os.path.join(work, "home"))
                os.mkdir(os.path.join(work, "tmp"))
                with open(cfg["script"], "wb") as f:
                    f.write(script_bytes)
                if is_root and cfg["uid"] is not None:
                    for name in ("", "home", "tmp", "main.py"):
                        os.chown(os.path.join(work, name), cfg["uid"], cfg["uid"])
                layers.append("tmpfs-workdir")
                workdir_ok = True
            except OSError:
                libc.umount2(work.encode(), 2)  # MNT_DETACH: back to the host directory
        if not workdir_ok:
            workdir_ok = mount(work, work, None, MS_BIND | MS_REC) == 0
    if workdir_ok:
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].encode().decode("unicode_escape")
                if mp != work and not mp.startswith(work + "/"):
                    points.append(mp)
        ok = True
        for mp in points:
            try:
                keep = os.statvfs(mp).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024)  # 1024: noatime
            except OSError:
                continue
            if mount(None, mp, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep) != 0:
                ok = ok and mp.startswith(("/proc", "/sys", "/dev"))
        if ok:
            layers.append("read-only-filesystem")
    drop = plan_user_layers()
    user = os.fork()
    if user:
        # Reap orphans until the user process ends, report its raw status, and exit: the kernel
        # then kills whatever the user code left running in the namespace.
        while True:
            try:
                pid, st = os.wait()
            except ChildProcessError:
                st = 0
                break
            if pid == user:
                break
        os.write(status_fd, (json.dumps({"user": st, "layers": layers}) + "\n").encode())
        os._exit(0)
os.close(status_fd)
# U: the user process.
os.chdir(cfg["workdir"])
lim = cfg["limits"]
def setlim(res, soft, hard=None):
    try:
        resource.setrlimit(res, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass
setlim(resource.RLIMIT_CORE, 0)
setlim(resource.RLIMIT_CPU, lim["cpu_time"], lim["cpu_time"] + 1)
setlim(resource.RLIMIT_FSIZE, lim["max_file_mb"] << 20)
setlim(resource.RLIMIT_NOFILE, lim["max_open_files"])
if drop:
    setlim(resource.RLIMIT_NPROC, lim["max_processes"])
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
elif not is_root:
    # RLIMIT_NPROC counts every process of the uid, so allow the ones that already exist.
    mine = 0
    for d in os.listdir("/proc"):
        try:
            mine += d.isdigit() and os.stat("/proc/" + d).st_uid == os.getuid()
        except OSError:
            pass
    setlim(resource.RLIMIT_NPROC, mine + lim["max_processes"])
setlim(resource.RLIMIT_AS, lim["memory_mb"] << 20)
_own_pgid = os.getpgid(0)
_net_ns = ns
def _guard(event, args):
    if event == "socket.__new__":
        family = args[1] if len(args) > 1 else None
        if family != 1:  # AF_UNIX stays available (local pipes); every network family is refused
            raise PermissionError("network access is disabled in the sandbox")
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        if getattr(args[0], "family", None) != 1:
            raise PermissionError("network access is disabled in the sandbox")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        raise PermissionError("network access is disabled in the sandbox")
    elif event in ("os.kill", "os.killpg"):
        pid = args[0]
        if event == "os.killpg" or pid <= 0:
            target = -pid if pid < 0 else (pid if event == "os.killpg" else _own_pgid)
            if target != _own_pgid:
                raise PermissionError("signals outside the sandbox are disabled")
        else:
            try:
                same = os.getpgid(pid) == _own_pgid
            except OSError:
                same = False
            if not same:
                raise PermissionError("signals outside the sandbox are disabled")
    elif not _net_ns and event in ("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata"):
        raise PermissionError("ctypes is disabled in the sandbox")
del libc, ctypes
sys.addaudithook(_guard)
sys.argv = [cfg["script"]]
import runpy
runpy.run_path(cfg["script"], run_name="__main__")
"""


_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def _sandbox_uid() -> int | None:
    # A uid nobody else uses, different for concurrent runs, so RLIMIT_NPROC and kill(-1) only
    # ever concern this run. 200000+ is outside the ranges distributions allocate.
    if os.geteuid() != 0:
        return None
    with _uid_lock:
        n = next(_uid_counter)
    return 200_000 + (os.getpid() % 4096) * 256 + n % 256


def _interpreter_paths() -> dict[str, list[str]]:
    """Directories the code must read (``expose``) and their untraversable ancestors (``hide``)."""
    expose = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)})
    hide = set()
    for p in expose:
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            if not os.stat(anc).st_mode & 0o001:
                hide.add(anc)
                break
    return {"expose": expose, "hide": sorted(hide)}


class _Drain(threading.Thread):
    """Read a pipe to EOF keeping its first and last bytes (``limit`` in all), so a flood never
    fills memory and the end of the output (a final verdict line) survives truncation."""

    def __init__(self, stream, limit: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.tail_limit = min(4096, limit // 4)
        self.head_limit = limit - self.tail_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def run(self) -> None:
        while chunk := self.stream.read1(65536):
            room = self.head_limit - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                extra = len(self.tail) - self.tail_limit
                if extra > 0:
                    self.dropped += extra
                    del self.tail[:extra]

    def text(self) -> str:
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {self.dropped} bytes truncated ...]\n{tail}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(source: str, limits: SandboxLimits | None = None, stdin: str = "") -> SandboxResult:
    """Run ``source`` as ``__main__`` in a fresh sandboxed interpreter and report what happened.

    Never raises for anything the code does; raises ``TypeError`` only for a non-str ``source``.
    """
    if not isinstance(source, str):
        raise TypeError(f"run_python expects source code as str, got {type(source).__name__}")
    limits = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="unimask-sandbox-")
    uid = _sandbox_uid() if limits.drop_privileges else None
    rfd, wfd = os.pipe()
    t0 = time.perf_counter()
    try:
        script = os.path.join(workdir, "main.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(source)
        for sub in ("home", "tmp"):
            os.mkdir(os.path.join(workdir, sub))
        if uid is not None:
            for root, dirs, files in os.walk(workdir):
                for name in [root, *(os.path.join(root, x) for x in dirs + files)]:
                    os.chown(name, uid, uid)
        cfg = {
            "workdir": workdir,
            "script": script,
            "status_fd": wfd,
            "uid": uid,
            "namespaces": limits.namespaces,
            "limits": asdict(limits),
            **_interpreter_paths(),
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.path.join(workdir, "home"),
            "TMPDIR": os.path.join(workdir, "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", BOOTSTRAP, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            pass_fds=(wfd,),
            close_fds=True,
        )
        os.close(wfd)
        wfd = -1
        out, err = _Drain(proc.stdout, limits.max_output_bytes), _Drain(proc.stderr, limits.max_output_bytes)
        out.start()
        err.start()
        feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True)
        feeder.start()
        timed_out = not _wait(proc, limits.wall_time)
        _kill_group(proc)  # also reaps stragglers left in the group after a normal exit
        proc.wait()
        status_raw = _read_all(rfd)
        out.join(timeout=2.0)
        err.join(timeout=2.0)
        wall = time.perf_counter() - t0
        report = _parse_status(status_raw)
        return _classify(report, timed_out, proc.returncode, out, err, wall, limits)
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for ``proc`` to exit; False on timeout. A pidfd wakes us the moment it exits, where
    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms (most of a short run's latency)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return bool(ready) or proc.poll() is not None


def _feed(pipe, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError):
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_status(raw: bytes) -> dict | None:
    """The user process' wait status and the isolation layers, or None if it never reported."""
    for line in raw.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(msg, dict) and "user" in msg:
            return msg
    return None


def _classify(
    report: dict | None,
    timed_out: bool,
    returncode: int | None,
    out: _Drain,
    err: _Drain,
    wall: float,
    limits: SandboxLimits,
) -> SandboxResult:
    stdout, stderr = out.text(), err.text()
    truncated = out.truncated or err.truncated
    layers = ["process-group", "wall-timeout", "temp-workdir"] + (report["layers"] if report else [])
    if timed_out:
        return SandboxResult("timeout", stdout, stderr, None, wall, truncated, layers)
    if report is None:
        # The launcher died before reporting: killed by the code (no PID namespace), or the set-up
        # itself failed (its traceback is in stderr).
        status: Status = "killed" if returncode is None or returncode < 0 else "error"
        return SandboxResult(status, stdout, stderr, returncode, wall, truncated, layers)
    st = report["user"]
    code = -os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)
    if code == 0:
        status = "ok"
    elif code == -24 or (code == -9 and wall >= limits.cpu_time):  # SIGXCPU / CPU hard limit
        status = "timeout"
    elif "MemoryError" in stderr[-2000:]:
        status = "memory"
    elif code < 0:
        status = "killed"
    else:
        status = "error"
    return SandboxResult(status, stdout, stderr, code, wall, truncated, layers)


def default_workers() -> int:
    """Pool size: leave a core for the harness and the model."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def run_many(
    sources: Sequence[str],
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    stdins: Sequence[str] | None = None,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run many programs, at most ``workers`` sandboxes at a time; results in input order.

    Each worker thread only launches and waits for its sandbox process, so the pool bounds the
    number of live sandboxes (and their memory), not the harness' CPU.
    """
    workers = workers or default_workers()
    if stdins is not None and len(stdins) != len(sources):
        raise ValueError(f"stdins has {len(stdins)} entries for {len(sources)} sources")
    results: list[SandboxResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        futures = {
            pool.submit(run_python, src, limits, stdins[i] if stdins else ""): i
            for i, src in enumerate(sources)
        }
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result is not None:
                on_result(i, results[i])
    return [r for r in results if r is not None]
