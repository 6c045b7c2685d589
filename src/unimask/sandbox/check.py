"""A self-test of the sandbox on the current machine: which layers are in force, and whether a
short hostile battery is contained (``unimask eval sandbox-check``).

Run it once on every new host (CI runner, cluster node, container image): the kernel decides
which isolation layers exist, and this reports them instead of assuming them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from unimask.sandbox import SandboxLimits, run_python


@dataclass
class CheckResult:
    name: str
    contained: bool
    detail: str


def _alive_with(marker: str) -> bool:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


def run_checks(limits: SandboxLimits | None = None) -> tuple[list[str], list[CheckResult]]:
    """The isolation layers in force and the outcome of each hostile program."""
    limits = limits or SandboxLimits(wall_time=2.0, cpu_time=2, memory_mb=512, max_processes=16)
    layers = run_python("pass", limits).isolation
    out: list[CheckResult] = []

    def check(name: str, src: str, contained_if) -> None:
        t0 = time.perf_counter()
        r = run_python(src, limits)
        ok = bool(contained_if(r))
        last = (r.stderr.strip().splitlines() or [""])[-1][:80]
        out.append(CheckResult(name, ok, f"{r.status} in {time.perf_counter() - t0:.1f}s {last}".strip()))

    check("infinite loop", "while True: pass", lambda r: r.status == "timeout")
    check("memory bomb", "x = bytearray(64 << 30)", lambda r: r.status == "memory")
    marker = f"unimask-check-{uuid.uuid4().hex}"
    bomb = (
        "import os, sys\nSLEEP = 'import time; time.sleep(30)'\n"
        "while True:\n    try:\n        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', SLEEP, {marker!r}])\n"
        "    except OSError:\n        pass\n"
    )
    check("fork bomb", bomb, lambda r: not r.passed and not (time.sleep(0.3) or _alive_with(marker)))
    daemon = (
        "import os, sys\nSLEEP = 'import time; time.sleep(30)'\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', SLEEP, {marker + 'd'!r}])\n"
        "    os._exit(0)\n"
    )
    check("setsid daemon", daemon, lambda r: not (time.sleep(0.3) or _alive_with(marker + "d")))
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "escaped.txt"
        check(
            "write outside workdir", f"open({str(target)!r}, 'w').write('x')", lambda r: not target.exists()
        )
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:

        def refused(r) -> bool:
            try:
                server.accept()[0].close()
                return False
            except TimeoutError:
                return not r.passed

        check(
            "socket to 127.0.0.1",
            f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)",
            refused,
        )
    finally:
        server.close()
    check("kill the harness", f"import os; os.kill({os.getpid()}, 9)", lambda r: not r.passed)
    check("kill everything", "import os; os.kill(-1, 9)", lambda r: True)  # we are still running: contained
    return layers, out
