"""Slot detection: nvidia-smi parsing, CPU brand, and the fallbacks between them."""

import pytest

from agent.devices import detect_slots, parse_cpu_brand, parse_nvidia_smi
from agent.protocol import DeviceType

NVIDIA_SMI_TWO_GPUS = """\
1, NVIDIA A10G, GPU-bbbbbbbb-2222-3333-4444-555555555555
0, NVIDIA A10G, GPU-aaaaaaaa-2222-3333-4444-555555555555
"""

CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""

CPUINFO_ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


def test_nvidia_smi_output_becomes_cuda_slots_in_gpu_index_order():
    slots = parse_nvidia_smi(NVIDIA_SMI_TWO_GPUS)
    assert [(s.id, s.type, s.brand, s.uuid[:12]) for s in slots] == [
        (0, DeviceType.CUDA, "NVIDIA A10G", "GPU-aaaaaaaa"),
        (1, DeviceType.CUDA, "NVIDIA A10G", "GPU-bbbbbbbb"),
    ]


def test_nvidia_smi_name_with_comma_keeps_the_uuid_last():
    (slot,) = parse_nvidia_smi("0, Tesla V100, SXM2, GPU-1234\n")
    assert (slot.brand, slot.uuid) == ("Tesla V100, SXM2", "GPU-1234")


@pytest.mark.parametrize("output", ["No devices were found", "x, A10G, GPU-1", "0, A10G"])
def test_nvidia_smi_garbage_is_an_error(output):
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi(output)


def test_empty_nvidia_smi_output_means_no_gpu():
    assert parse_nvidia_smi("\n") == []


@pytest.mark.parametrize(
    ("cpuinfo", "brand"),
    [
        (CPUINFO_X86, "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"),
        (CPUINFO_ARM, "Raspberry Pi 4 Model B Rev 1.4"),
        ("processor\t: 0\n", ""),
    ],
)
def test_cpu_brand_from_proc_cpuinfo(cpuinfo, brand):
    assert parse_cpu_brand(cpuinfo) == brand


def _never_run(path: str) -> str:
    raise AssertionError("nvidia-smi must not run")


def test_without_nvidia_smi_the_agent_offers_its_cpu_slots():
    slots = detect_slots(
        no_gpu=False,
        cpu_slot_count=3,
        which=lambda name: None,
        run_nvidia_smi=_never_run,
        read_cpuinfo=lambda: CPUINFO_X86,
    )
    assert [(s.id, s.type, s.uuid) for s in slots] == [(i, DeviceType.CPU, "") for i in range(3)]
    assert {s.brand for s in slots} == {"Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"}


def test_gpus_found_by_nvidia_smi_win_over_cpu_slots():
    slots = detect_slots(
        no_gpu=False,
        cpu_slot_count=8,
        which=lambda name: "/usr/bin/nvidia-smi",
        run_nvidia_smi=lambda path: NVIDIA_SMI_TWO_GPUS,
    )
    assert [s.type for s in slots] == [DeviceType.CUDA, DeviceType.CUDA]


def test_no_gpu_skips_nvidia_smi():
    slots = detect_slots(
        no_gpu=True,
        cpu_slot_count=2,
        which=lambda name: "/usr/bin/nvidia-smi",
        run_nvidia_smi=_never_run,
        read_cpuinfo=lambda: "",
    )
    assert [s.type for s in slots] == [DeviceType.CPU, DeviceType.CPU]


def test_broken_driver_falls_back_to_cpu_slots():
    def failing(path: str) -> str:
        raise RuntimeError("exit code 9: NVIDIA-SMI has failed")

    def unreadable() -> str:
        raise OSError("no /proc")

    slots = detect_slots(
        no_gpu=False,
        cpu_slot_count=1,
        which=lambda name: "/usr/bin/nvidia-smi",
        run_nvidia_smi=failing,
        read_cpuinfo=unreadable,
    )
    assert [(s.type, s.brand) for s in slots] == [(DeviceType.CPU, "")]
