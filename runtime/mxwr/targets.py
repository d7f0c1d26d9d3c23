"""Which of a bundle's compiled targets this host can run, and the MAX device for it.

A target is named `cpu` or `<api>:<arch>` (e.g. `cuda:sm_90a`). `--device auto` prefers a GPU
target whose architecture matches the host's GPU, then the CPU target.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import replace
from functools import cache

from .errors import BundleError, MxwError
from .manifest import Host, Target

# Instruction-set extensions worth recording (MAX's CPU kernels and ours pick code paths by them,
# for the CPU that compiles them), in /proc/cpuinfo's spelling: x86 "flags", Arm "Features".
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                "asimd", "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm")


@cache
def this_cpu() -> tuple[str | None, frozenset[str]]:
    """This CPU's model name (None where the system does not say) and its extensions among
    CPU_FEATURES (None: not known here, not Linux)."""
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip() and cpu is None:
                    cpu = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:  # not Linux: the platform module's answer, and no features to go by
        return platform.processor() or None, None
    return cpu, frozenset(f for f in CPU_FEATURES if f in flags)


def check_cpu(built_on: Host, path: object) -> None:
    """A CPU target's code is compiled for the CPU that built it: a CPU without one of its
    extensions would stop at the first instruction it lacks."""
    _, features = this_cpu()
    if features is None or built_on.machine != platform.machine():
        return
    missing = [f for f in built_on.cpu_features if f not in features]
    if missing:
        raise BundleError(
            f"{path}'s CPU code was compiled for a CPU with {', '.join(missing)}, which this one lacks: "
            f"build the bundle on this kind of CPU")


def open_device(target: Target):
    """The MAX device a selected target runs on."""
    from max.driver import CPU, Accelerator

    return Accelerator(target.gpu_index or 0) if target.is_gpu else CPU()


def host_targets() -> list[str]:
    """What this host offers: `cpu`, plus `<api>:<arch>` for each GPU MAX can see."""
    from max.driver import Accelerator, accelerator_count

    offered = ["cpu"]
    for i in range(accelerator_count()):
        gpu = Accelerator(i)
        offered.append(f"{gpu.api}:{gpu.architecture_name}")
    return offered


def select_target(targets: Sequence[Target], device: str = "auto", offered: list[str] | None = None) -> Target:
    """Picks the bundle target for `device` (auto | cpu | gpu | gpu:N) on this host."""
    offered = host_targets() if offered is None else offered
    gpus = offered[1:]
    names = ", ".join(t.name for t in targets)

    def no_target(why: str) -> MxwError:
        return MxwError(
            f"{why}: the bundle has targets [{names}], this host offers [{', '.join(offered)}]"
        )

    if device not in ("auto", "cpu", "gpu") and not (device.startswith("gpu:") and device[4:].isdigit()):
        raise MxwError(f"unknown device {device[:40]!r}: use auto, cpu, gpu or gpu:N")
    if device in ("auto", "gpu") or device.startswith("gpu:"):
        indices = range(len(gpus)) if ":" not in device else [int(device[4:])]
        if device != "auto" and not gpus:
            raise no_target(f"--device {device} asked for a GPU but none is visible")
        for i in indices:
            if i >= len(gpus):
                raise no_target(f"--device {device}: no such GPU")
            for t in targets:
                if t.name == gpus[i]:
                    return replace(t, gpu_index=i)
        if device != "auto":
            raise no_target(f"no compiled target for the GPU asked for (--device {device})")
    for t in targets:
        if t.name == "cpu":
            return t
    raise no_target("no usable target")


def max_version() -> str:
    """The installed MAX's version, as the bundle's `producer.max_version` records it ("none"
    without MAX). MAX's own library states it; the package metadata (a scan of site-packages,
    tens of ms at every start) is asked only if it does not."""
    try:
        from max._core import __version__

        return str(__version__)
    except (ImportError, AttributeError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("max")
        except PackageNotFoundError:
            return "none"


def check_max_version(compiled_with: str, path: object) -> None:
    """A MEF loads only into the MAX that compiled it: checked before one is handed to MAX."""
    installed = max_version()
    if installed != compiled_with:
        raise BundleError(
            f"{path} was compiled with MAX {compiled_with[:40]}, but this runtime has MAX {installed}: "
            f"install max=={compiled_with[:40]} beside it, or rebuild the bundle with this MAX"
        )
