"""The sandbox: normal runs, limits, and a hostile battery that must be contained."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimask.sandbox import SandboxLimits, SandboxResult, run_many, run_python

FAST = SandboxLimits(wall_time=2.0, cpu_time=2, memory_mb=512)


def _alive_with(marker: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                pids.append(int(d))
        except OSError:
            pass
    return pids


def _layers() -> list[str]:
    return run_python("pass").isolation


def test_ok_stdout_stdin_and_exit_codes():
    r = run_python("import sys\nprint(input()[::-1])\nprint('err', file=sys.stderr)", stdin="abc\n")
    assert isinstance(r, SandboxResult)
    assert (r.status, r.exit_code, r.stdout, r.stderr) == ("ok", 0, "cba\n", "err\n")
    assert run_python("import sys; sys.exit(3)").exit_code == 3
    r = run_python("raise ValueError('boom')")
    assert r.status == "error" and r.exit_code == 1 and "ValueError: boom" in r.stderr


def test_fresh_isolated_interpreter_and_throwaway_workdir():
    src = (
        "import os, sys\nprint(os.getcwd()); print(os.environ['HOME']); print(os.environ['TMPDIR'])\n"
        "print(sys.flags.isolated)\nopen('scratch.txt', 'w').write('x')"
    )
    r = run_python(src)
    assert r.status == "ok", r.stderr
    cwd, home, tmp, isolated = r.stdout.split()
    assert home.startswith(cwd) and tmp.startswith(cwd) and isolated == "1"
    assert not os.path.exists(cwd), "the working directory must be removed afterwards"


def test_wall_timeout_kills_sleeping_code():
    t0 = time.perf_counter()
    r = run_python("import time; time.sleep(60)", SandboxLimits(wall_time=1.0))
    assert r.status == "timeout" and r.exit_code is None
    assert time.perf_counter() - t0 < 5


def test_infinite_loop_is_a_timeout():
    t0 = time.perf_counter()
    r = run_python("while True: pass", FAST)
    assert r.status == "timeout"
    assert time.perf_counter() - t0 < 6


def test_memory_bomb():
    r = run_python("x = bytearray(8 << 30)", FAST)
    assert r.status == "memory" and not r.passed
    r = run_python("a = []\nwhile True: a.append(' ' * (1 << 24))", FAST)
    assert r.status in ("memory", "killed", "timeout") and not r.passed


def test_output_flood_is_truncated():
    r = run_python("while True: print('x' * 1000)", SandboxLimits(wall_time=1.0, max_output_bytes=5000))
    assert r.status == "timeout" and r.truncated
    assert len(r.stdout) < 5100


def test_truncation_keeps_the_end_of_the_output():
    r = run_python("for i in range(50000): print(i)\nprint('THE END')", SandboxLimits(max_output_bytes=4000))
    assert r.status == "ok" and r.truncated
    assert r.stdout.startswith("0\n1\n") and r.stdout.rstrip().endswith("THE END") and len(r.stdout) < 4200


def test_fork_bomb_contained_and_leaves_nothing_behind():
    marker = f"unimask-bomb-{uuid.uuid4().hex}"
    src = (
        "import os, sys\nSLEEP = 'import time; time.sleep(60)'\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', SLEEP, {marker!r}])\n"
        "    except OSError:\n"
        "        pass\n"
    )
    t0 = time.perf_counter()
    r = run_python(src, SandboxLimits(wall_time=2.0, cpu_time=3, max_processes=16))
    assert not r.passed and time.perf_counter() - t0 < 8
    time.sleep(0.3)
    assert _alive_with(marker) == []


def test_daemon_that_escapes_the_process_group_is_killed():
    if "pid-namespace" not in _layers():
        pytest.skip("no PID namespace here: a setsid() daemon can outlive the sandbox (see docs/sandbox.md)")
    marker = f"unimask-daemon-{uuid.uuid4().hex}"
    src = (
        "import os, sys\nSLEEP = 'import time; time.sleep(60)'\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', SLEEP, {marker!r}])\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    r = run_python(src, FAST)
    assert r.status == "ok" and "parent done" in r.stdout
    time.sleep(0.3)
    assert _alive_with(marker) == []


def test_writing_outside_the_workdir_fails(tmp_path):
    if "read-only-filesystem" not in _layers():
        pytest.skip("no mount namespace here: only the uid's own permissions guard the filesystem")
    target = tmp_path / "escaped.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('pwned')", FAST)
    assert not r.passed and not target.exists()
    r = run_python("open('/tmp/unimask-escape-probe.txt', 'w').write('x')", FAST)
    assert not r.passed and not os.path.exists("/tmp/unimask-escape-probe.txt")


def test_disk_use_is_capped():
    if "tmpfs-workdir" not in _layers():
        pytest.skip("no mount namespace here: only RLIMIT_FSIZE (per file) bounds disk use")
    src = "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * (1 << 20))\nprint('wrote it all')"
    r = run_python(src, SandboxLimits(max_disk_mb=8, max_file_mb=4))
    assert r.status == "error" and "No space left" in r.stderr
    r = run_python("open('big', 'wb').write(b'x' * (8 << 20))", SandboxLimits(max_disk_mb=64, max_file_mb=4))
    assert not r.passed  # SIGXFSZ or EFBIG past RLIMIT_FSIZE


def test_network_is_unreachable():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        r = run_python(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')", FAST
        )
        assert not r.passed
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_network_namespace_has_no_interfaces():
    if "net-namespace" not in _layers():
        pytest.skip("no network namespace here; the audit-hook guard alone is in force")
    r = run_python("print(open('/proc/net/dev').read())", FAST)
    assert r.status == "ok"
    ifaces = [line.split(":")[0].strip() for line in r.stdout.splitlines()[2:] if ":" in line]
    assert ifaces == ["lo"]


def test_killing_the_parent_and_the_harness_is_contained():
    me = os.getpid()
    for src in (
        "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
        f"import os, signal; os.kill({me}, signal.SIGKILL)",
        "import os, signal; os.kill(-1, signal.SIGKILL)",
    ):
        r = run_python(src, FAST)
        assert not r.passed or src.endswith("getppid(), signal.SIGKILL)"), (src, r)
        assert os.getpid() == me  # still here
    r = run_python("import os; os.kill(os.getpid(), 9)", FAST)
    assert r.status == "killed" and r.exit_code == -9


def test_run_many_bounds_concurrency_and_keeps_order():
    srcs = [f"import time; time.sleep(0.4); print({i})" for i in range(4)]
    t0 = time.perf_counter()
    rs = run_many(srcs, SandboxLimits(wall_time=5), workers=2)
    elapsed = time.perf_counter() - t0
    assert [r.stdout.strip() for r in rs] == ["0", "1", "2", "3"]
    assert elapsed >= 0.8, "more than `workers` sandboxes ran at once"


def test_bad_limits_and_source_are_clear_errors():
    with pytest.raises(ValueError, match="wall_time"):
        SandboxLimits(wall_time=0)
    with pytest.raises(TypeError, match="str"):
        run_python(b"print(1)")  # type: ignore[arg-type]


@settings(max_examples=8, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_stdout_roundtrip(text):
    r = run_python(f"print({text!r}, end='')")
    assert r.status == "ok" and r.stdout == text


def test_fallback_without_namespaces_still_guards_network_signals_and_limits():
    limits = SandboxLimits(wall_time=2.0, cpu_time=2, memory_mb=512, namespaces=False)
    assert "net-namespace" not in run_python("pass", limits).isolation
    me = os.getpid()
    for src in (
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        f"import os; os.kill({me}, 9)",
        "import os; os.killpg(1, 9)",
        "import ctypes; ctypes.CDLL(None).socket(2, 1, 0)",
    ):
        r = run_python(src, limits)
        assert r.status == "error" and "PermissionError" in r.stderr, (src, r.stderr[-300:])
    assert run_python("while True: pass", limits).status == "timeout"
    assert run_python("x = bytearray(4 << 30)", limits).status == "memory"
    # AF_UNIX stays usable (multiprocessing pipes, socketpair, local servers); name lookups do not.
    assert run_python(
        "import socket; a, b = socket.socketpair(); a.send(b'x'); print(b.recv(1))", limits
    ).passed
    unix = (
        "import socket\ns = socket.socket(socket.AF_UNIX); s.bind('sock'); s.listen(1)\n"
        "c = socket.socket(socket.AF_UNIX); c.connect('sock'); a, _ = s.accept(); c.sendall(b'hey')\n"
        "print(a.recv(3))"
    )
    assert run_python(unix, limits).stdout.strip() == "b'hey'"
    assert "PermissionError" in run_python("import socket; socket.gethostbyname('localhost')", limits).stderr
