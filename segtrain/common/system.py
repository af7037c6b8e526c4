"""What this process may use of the machine (torch-free)."""

from __future__ import annotations

import os
import platform


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory this process may still take: the kernel's MemAvailable, lowered to what is left of
    a container's cgroup memory limit; None where neither can be read (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f, open(usage_file, encoding="ascii") as g:
                limit, usage = f.read().strip(), g.read().strip()
            if limit != "max" and int(limit) < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
                found.append(max(0, int(limit) - int(usage)))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty elsewhere)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return out
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_name() -> str:
    """The CPU's model name (what measurements made on this machine are keyed by)."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


# The instruction sets that decide which kernels the engines run (and so which engine is faster).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU has (from /proc/cpuinfo; empty elsewhere)."""
    flags = set(cpu_info().get("flags", "").split())
    return [f for f in CPU_FEATURES if f in flags]
