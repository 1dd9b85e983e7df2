"""A sandbox for model-written Python: kernel isolation through bubblewrap, then a seccomp filter.

The `python` tool runs code the policy wrote, thousands of times a run, so it treats it as
hostile. Each call runs a fresh `python -I -S` (the interpreter the trainer uses, standard library
only) under `bwrap` with:
- namespaces: mount (a private empty root: read-only binds of the interpreter, its standard
  library and the shared libraries they load; `/dev` minimal; no `/proc`, no host files),
  PID (the program cannot see or signal the trainer, and every process it left dies with the
  call), network (no device but an unused loopback), IPC, UTS, cgroup;
- a writable scratch folder `/scratch` (the working directory and TMPDIR): a tmpfs bounded in
  bytes and in files (`nr_inodes`), private to the call and gone with it;
- an unprivileged identity: uid 65534 (nobody) when the trainer runs as root; otherwise the
  trainer's own user inside a user namespace, with every capability dropped;
- rlimits: CPU time, address space, file size, open files, process count, no core dumps;
- a seccomp filter (`rlrecipes/seccomp.py`; no_new_privs; installed by the preamble before the
  user's code runs, so no Python-level trick can lift it) that refuses new programs (execve), new processes (fork, clone
  without CLONE_THREAD), sockets other than AF_UNIX, ptrace, mount/namespace calls, io_uring,
  bpf, keyrings and module/kexec calls.
The host side reads stdout and stderr incrementally with hard caps (nothing past the cap is held)
and kills the whole sandbox at the wall-time limit, so a call returns within timeout + 1 s.

What it does not isolate: CPU and memory bandwidth (a call can slow the trainer for its
timeout), and kernel bugs reachable through the allowed system calls.
"""
from __future__ import annotations

import functools
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass

from .seccomp import seccomp_filter


class SandboxUnavailable(RuntimeError):
    """The host cannot provide the isolation; the message says what is missing and how to fix it."""


# Runs inside the sandbox before the user's code: argv = [-c, code, json config, filter hex].
# It is the only code that runs with the capabilities bwrap leaves (mount the scratch tmpfs,
# change uid); everything it sets is kernel state that the user's code cannot undo.
_PREAMBLE = r"""
import sys
def _rlrecipes_sandbox(cfg, filt):
    import ctypes, os, resource
    libc = ctypes.CDLL(None, use_errno=True)
    def ok(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
    opts = f"size={cfg['scratch_bytes']},nr_inodes={cfg['max_files'] + 1},mode=1777".encode()
    ok(libc.mount(b"scratch", b"/scratch", b"tmpfs", 2 | 4, opts), "mount /scratch")  # nosuid, nodev
    os.chdir("/scratch")
    for name, value in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if cfg["uid"] is not None:   # the trainer is root: become nobody, which drops every capability
        os.setgroups([])
        os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    else:                        # inside a user namespace: drop the capabilities bwrap left
        hdr, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
        ok(libc.capset(hdr, data), "capset")
    ok(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
    buf = ctypes.create_string_buffer(filt, len(filt))
    class Fprog(ctypes.Structure):   # struct sock_fprog
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Fprog(len(filt) // 8, ctypes.addressof(buf))
    ok(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "seccomp")
    return buf, prog
try:
    _keep = _rlrecipes_sandbox(__import__("json").loads(sys.argv[2]), bytes.fromhex(sys.argv[3]))
except Exception as exc:
    sys.stderr.write(f"rlrecipes-sandbox: setup failed: {exc}\n")   # the program does not run
    sys.exit(125)
_code, sys.argv = sys.argv[1], ["-c"]
del _rlrecipes_sandbox, _keep
exec(compile(_code, "<tool>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass
class Limits:
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_output: int = 1000          # characters of stdout returned
    output_limit: int = 1 << 20     # bytes of stdout+stderr after which the program is killed
    max_files: int = 64             # files and folders in /scratch
    scratch_mb: int = 16
    file_mb: int = 8
    max_procs: int = 32             # threads; new processes are refused by seccomp anyway
    max_open_files: int = 64


@dataclass
class Result:
    stdout: str
    stderr_tail: str
    returncode: int | None
    timed_out: bool = False
    output_over: bool = False


def run_streaming(argv: list[str], limits: Limits, **popen) -> Result:
    """Run `argv` in its own session; read stdout (first `max_output` bytes kept) and stderr
    (last 4 KiB kept) as they come; kill the session at the wall-time limit or when the output
    passes `output_limit` bytes. Returns within `timeout_s` + a fraction of a second."""
    deadline = time.monotonic() + limits.timeout_s
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **popen)
    out, err, total, timed_out, over = bytearray(), bytearray(), 0, False, False
    keep = limits.max_output * 4   # bytes: up to max_output UTF-8 characters
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                total += len(chunk)
                buf = key.data
                buf += chunk
                if buf is out:
                    del buf[keep:]
                else:
                    del buf[:-4096]
            if total > limits.output_limit:
                over = True
                break
    _kill(proc)
    code = None if timed_out or over else proc.returncode
    return Result(out.decode(errors="replace")[:limits.max_output], err.decode(errors="replace"),
                  code, timed_out, over)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the session (bwrap's --die-with-parent and the PID namespace take the rest)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@functools.lru_cache(maxsize=1)
def _python_files() -> tuple[str, list[str]]:
    """(the real interpreter, the paths it needs read-only: stdlib folders and shared libraries)."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix,
            "installed_platbase": sys.base_exec_prefix}   # the interpreter's own, not a venv's
    stdlib, platstdlib = sysconfig.get_path("stdlib", vars=base), sysconfig.get_path("platstdlib", vars=base)
    paths = {exe, stdlib, platstdlib}
    dynload = os.path.join(platstdlib, "lib-dynload")
    objects = [exe] + ([os.path.join(dynload, f) for f in os.listdir(dynload)] if os.path.isdir(dynload) else [])
    ldd = shutil.which("ldd")
    if ldd is None:
        raise SandboxUnavailable("the python tool's sandbox needs `ldd` (Debian/Ubuntu package libc-bin) "
                                 "to find the interpreter's shared libraries")
    out = subprocess.run([ldd, *objects], capture_output=True, text=True).stdout
    for line in out.splitlines():
        part = line.split("=>")[-1].strip().split(" (")[0]
        if part.startswith("/"):
            paths.add(part)
    if os.path.exists("/etc/ld.so.cache"):
        paths.add("/etc/ld.so.cache")
    return exe, sorted(p for p in paths if os.path.exists(p))


def _parents(path: str):
    """/a/b/c -> /a/b, /a (not /)."""
    path = os.path.dirname(path)
    while path != "/":
        yield path
        path = os.path.dirname(path)


def bwrap_argv(limits: Limits, code: str) -> list[str]:
    """The command line of one sandboxed call."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("the python tool needs bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), "
                                 "`dnf install bubblewrap` (Fedora), or set sandbox: unsafe_local to run "
                                 "model-written code without isolation")
    exe, paths = _python_files()
    root = os.geteuid() == 0
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv",
            "--setenv", "TMPDIR", "/scratch", "--setenv", "HOME", "/scratch", "--setenv", "PYTHONIOENCODING", "utf-8",
            "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN"]
    argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if root else ["--unshare-user", "--uid", "0", "--gid", "0"]
    # the bound paths' parent folders, 0755 (bwrap makes them 0700 when privileged: nobody could not enter)
    for folder in sorted({folder for path in paths for folder in _parents(path)}):
        argv += ["--perms", "0755", "--dir", folder]
    for path in paths:
        argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev", "--dir", "/scratch", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/"]
    rlimits = {**_rlimits(limits), "RLIMIT_NOFILE": limits.max_open_files, "RLIMIT_NPROC": limits.max_procs,
               "RLIMIT_CORE": 0}
    cfg = {"uid": 65534 if root else None, "rlimits": rlimits, "max_files": limits.max_files,
           "scratch_bytes": limits.scratch_mb << 20}
    return argv + ["--", exe, "-I", "-S", "-B", "-c", _PREAMBLE, code, json.dumps(cfg), seccomp_filter().hex()]


def _rlimits(limits: Limits) -> dict[str, int]:
    """CPU seconds, address space and file size: the limits both modes set."""
    return {"RLIMIT_CPU": max(1, math.ceil(limits.timeout_s)), "RLIMIT_AS": limits.memory_mb << 20,
            "RLIMIT_FSIZE": limits.file_mb << 20}


def run_python(code: str, limits: Limits, mode: str = "bwrap") -> Result:
    """Run `code` sandboxed (`bwrap`) or, for `unsafe_local`, as a plain `python -I -S` in a
    temporary folder with an empty environment and `_rlimits` only: no isolation at all."""
    if mode == "bwrap":
        return run_streaming(bwrap_argv(limits, code), limits)

    def apply():
        import resource
        for name, value in _rlimits(limits).items():
            resource.setrlimit(getattr(resource, name), (value, value))
    with tempfile.TemporaryDirectory() as tmp:
        return run_streaming([sys.executable, "-I", "-S", "-c", code], limits, cwd=tmp, env={}, preexec_fn=apply)


@functools.lru_cache(maxsize=None)
def check_host() -> None:
    """Raise SandboxUnavailable (one line: what is missing, how to fix it) unless a sandboxed
    `print(6 * 7)` prints 42 here. Cached per process."""
    res = run_python("print(6 * 7)", Limits(timeout_s=20))
    if res.stdout.strip() != "42":
        lines = [ln for ln in res.stderr_tail.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {res.returncode}"
        raise SandboxUnavailable(f"the python tool's sandbox cannot start here ({why}); it needs bubblewrap and "
                                 "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                                 "user.max_user_namespaces > 0) or root; or set sandbox: unsafe_local")
