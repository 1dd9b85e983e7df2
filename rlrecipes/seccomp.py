"""The seccomp filter of the `python` tool's sandbox (`rlrecipes/sandbox.py`): a classic-BPF
program, assembled here for x86_64 and aarch64, that the sandbox's preamble installs before the
user's code runs. It refuses new programs (execve), new processes (fork, clone without
CLONE_THREAD), sockets other than AF_UNIX, ptrace, mount/namespace calls, io_uring, bpf,
keyrings and module/kexec calls, and kills a process that uses another architecture's calls.
"""
from __future__ import annotations

import functools
import platform
import struct

# Syscall numbers (asm/unistd_64.h for x86_64; asm-generic/unistd.h for aarch64).
_DENY = ("execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
         "chroot", "pivot_root", "mount", "umount2", "unshare", "setns", "open_tree", "move_mount",
         "fsopen", "fsmount", "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
         "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
         "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
         "swapon", "swapoff", "acct", "open_by_handle_at", "name_to_handle_at")
_X86_64 = dict(socket=41, clone=56, fork=57, vfork=58, execve=59, ptrace=101, pivot_root=155, acct=163,
               chroot=161, mount=165, umount2=166, swapon=167, swapoff=168, reboot=169, init_module=175,
               delete_module=176, kexec_load=246, add_key=248, request_key=249, keyctl=250, unshare=272,
               perf_event_open=298, name_to_handle_at=303, open_by_handle_at=304, setns=308,
               process_vm_readv=310, process_vm_writev=311, finit_module=313, kexec_file_load=320,
               bpf=321, execveat=322, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
               io_uring_register=427, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
               fspick=433, clone3=435, mount_setattr=442)
_AARCH64 = dict(socket=198, clone=220, execve=221, ptrace=117, pivot_root=41, acct=89, chroot=51, mount=40,
                umount2=39, swapon=224, swapoff=225, reboot=142, init_module=105, delete_module=106,
                kexec_load=104, add_key=217, request_key=218, keyctl=219, unshare=97, perf_event_open=241,
                name_to_handle_at=264, open_by_handle_at=265, setns=268, process_vm_readv=270,
                process_vm_writev=271, finit_module=273, kexec_file_load=294, bpf=280, execveat=281,
                userfaultfd=282, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
                open_tree=428, move_mount=429, fsopen=430, fsmount=432, fspick=433, clone3=435,
                mount_setattr=442)
_ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}
_EPERM, _ENOSYS, _CLONE_THREAD, _AF_UNIX = 1, 38, 0x10000, 1
_ALLOW, _ERRNO, _KILL = 0x7FFF0000, 0x00050000, 0x80000000
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06   # BPF_LD|W|ABS, BPF_JMP|…|K, BPF_RET|K


@functools.lru_cache(maxsize=None)
def seccomp_filter(machine: str | None = None) -> bytes:
    """The classic-BPF seccomp program (struct sock_filter[]) for this CPU architecture.
    A foreign architecture's syscall (e.g. x32 or i386 on x86_64) kills the process."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        from .sandbox import SandboxUnavailable
        raise SandboxUnavailable(f"the python tool's seccomp filter knows x86_64 and aarch64, not {machine}")
    audit_arch, nr = _ARCHES[machine]
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, audit_arch), (_RET, 0, 0, _KILL), (_LD, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _KILL)]   # x32 ABI numbers
    # clone: threads only (glibc's pthread_create); clone3 -> ENOSYS so glibc falls back to clone
    prog += [(_JEQ, 0, 4, nr["clone"]), (_LD, 0, 0, 16), (_JSET, 0, 1, _CLONE_THREAD),
             (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _ERRNO | _EPERM),
             (_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _ERRNO | _ENOSYS)]
    prog += [(_JEQ, 0, 4, nr["socket"]), (_LD, 0, 0, 16), (_JEQ, 0, 1, _AF_UNIX),   # args[0]: the domain
             (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _ERRNO | _EPERM)]
    for name in _DENY:
        if name in nr:
            prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, _ERRNO | _EPERM)]
    prog += [(_RET, 0, 0, _ALLOW)]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)
