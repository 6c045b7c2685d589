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
from pathlib import Path
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


# The program the sandbox interpreter runs (python -I -c BOOTSTRAP CONFIG_JSON): it sets up the
# namespaces, limits and guards, then executes the user file as __main__. Passed as source text,
# not imported, so that nothing from the harness' environment (site-packages, cwd) is imported
# before user code; it lives in child.py so that ruff checks it.
BOOTSTRAP = (Path(__file__).with_name("child.py")).read_text(encoding="utf-8")


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
