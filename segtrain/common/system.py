"""What this process may use of the machine (torch-free)."""

from __future__ import annotations

import os


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
