"""The sandbox's child program; ``runner.run_python`` passes this file's text to ``python -I -c``.

Never import it: it runs at module level, on the config JSON in ``sys.argv[1]``.
"""
import ctypes
import json
import os
import resource
import signal
import sys

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
                    f.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{gid} {gid} 1")
            except OSError:
                pass
            ns = True
            layers.append("user-namespace")
    if ns:
        layers += ["pid-namespace", "net-namespace", "mount-namespace"]

def mount(src, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()
    return libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data))  # noqa: F821 (deleted only after the last mount)

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
            hidden = hidden and mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC) == 0
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
        opts = f"size={cfg['limits']['max_disk_mb']}m,mode=700"
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
import runpy  # noqa: E402 (only after the guards are in place)

runpy.run_path(cfg["script"], run_name="__main__")
