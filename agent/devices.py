"""Which slots this agent offers: one per NVIDIA GPU, or CPU slots when there is none.

GPUs are found with ``nvidia-smi``, the one tool every NVIDIA driver install ships. Its CSV
query output is one line per GPU, ``index, name, uuid`` (e.g. ``0, NVIDIA A10G,
GPU-5f8a...``). When the driver is missing or broken, nvidia-smi may be on PATH yet exit
non-zero ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"); the
agent then says so in its log and falls back to CPU slots rather than refusing to start.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from agent.protocol import DeviceType, SlotInfo

log = logging.getLogger(__name__)

NVIDIA_SMI = "nvidia-smi"
NVIDIA_SMI_ARGS = ["--query-gpu=index,name,uuid", "--format=csv,noheader"]
NVIDIA_SMI_TIMEOUT = 30.0  # seconds; the first call after boot can be slow while the driver loads
CPUINFO = Path("/proc/cpuinfo")


def parse_nvidia_smi(output: str) -> list[SlotInfo]:
    """CUDA slots from ``nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader``.

    Slots are numbered from 0 in GPU index order, so slot ``i`` is GPU index ``i`` on a normal
    machine. Raises ``ValueError`` on a line that is not ``index, name, uuid``.
    """
    gpus: list[tuple[int, str, str]] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        # A name with a comma would split in two; the uuid is always the last field.
        gpus.append((int(fields[0]), ", ".join(fields[1:-1]), fields[-1]))
    gpus.sort()
    return [
        SlotInfo(id=slot, type=DeviceType.CUDA, brand=name, uuid=uuid)
        for slot, (_, name, uuid) in enumerate(gpus)
    ]


def parse_cpu_brand(cpuinfo: str) -> str:
    """The CPU model from ``/proc/cpuinfo`` text (``model name`` on x86, ``Model`` or
    ``Hardware`` on some ARM kernels); empty when none is given."""
    for key in ("model name", "Model", "Hardware"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return ""


def cpu_slots(count: int | None, brand: str) -> list[SlotInfo]:
    """``count`` CPU slots; ``None`` means one per CPU core."""
    total = count if count is not None else (os.cpu_count() or 1)
    return [SlotInfo(id=i, type=DeviceType.CPU, brand=brand) for i in range(total)]


def _run_nvidia_smi(path: str) -> str:
    result = subprocess.run(
        [path, *NVIDIA_SMI_ARGS],
        capture_output=True,
        text=True,
        timeout=NVIDIA_SMI_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"exit code {result.returncode}" + (f": {detail[0]}" if detail else ""))
    return result.stdout


def detect_slots(
    *,
    no_gpu: bool,
    cpu_slot_count: int | None,
    which: Callable[[str], str | None] = shutil.which,
    run_nvidia_smi: Callable[[str], str] = _run_nvidia_smi,
    read_cpuinfo: Callable[[], str] = lambda: CPUINFO.read_text(errors="replace"),
) -> list[SlotInfo]:
    """The slots to offer: CUDA slots if GPUs are usable, else ``cpu_slot_count`` CPU slots."""
    path = None if no_gpu else which(NVIDIA_SMI)
    if path is not None:
        try:
            gpus = parse_nvidia_smi(run_nvidia_smi(path))
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as e:
            log.warning("nvidia-smi failed (%s); offering CPU slots instead", e)
        else:
            if gpus:
                log.info("found %d GPU(s): %s", len(gpus), ", ".join(g.brand for g in gpus))
                return gpus
            log.info("nvidia-smi lists no GPU; offering CPU slots")
    try:
        brand = parse_cpu_brand(read_cpuinfo())
    except OSError:
        brand = ""
    slots = cpu_slots(cpu_slot_count, brand)
    log.info("offering %d CPU slot(s)%s", len(slots), f" ({brand})" if brand else "")
    return slots
