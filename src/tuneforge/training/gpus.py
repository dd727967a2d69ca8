"""GPU memory catalogue for `tuneforge estimate --gpu NAME`: usable memory per device as the CUDA driver
reports it (torch.cuda.get_device_properties(0).total_memory, in MiB), and whether the GPU computes in bf16
(without it, `model.dtype: auto` and `train.precision: auto` resolve to float16)."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.registry import closest

MIB = 2**20


@dataclass(frozen=True)
class Gpu:
    name: str
    mib: int  # total memory the driver reports
    bf16: bool  # Ampere or newer
    description: str

    @property
    def bytes(self) -> int:
        return self.mib * MIB


GPUS: dict[str, Gpu] = {
    g.name: g
    for g in [
        Gpu("h200", 143771, True, "NVIDIA H200 141 GB"),
        Gpu("h100-80gb", 81559, True, "NVIDIA H100 80 GB (SXM / PCIe)"),
        Gpu("h100-94gb", 95830, True, "NVIDIA H100 NVL 94 GB"),
        Gpu("a100-80gb", 81920, True, "NVIDIA A100 80 GB"),
        Gpu("a100-40gb", 40960, True, "NVIDIA A100 40 GB"),
        Gpu("l40s", 46068, True, "NVIDIA L40S 48 GB"),
        Gpu("a6000", 49140, True, "NVIDIA RTX A6000 48 GB"),
        Gpu("a10g", 23028, True, "NVIDIA A10G 24 GB (AWS g5)"),
        Gpu("a10", 23028, True, "NVIDIA A10 24 GB"),
        Gpu("l4", 23034, True, "NVIDIA L4 24 GB"),
        Gpu("4090", 24564, True, "GeForce RTX 4090 24 GB"),
        Gpu("3090", 24576, True, "GeForce RTX 3090 24 GB"),
        Gpu("4080", 16376, True, "GeForce RTX 4080 16 GB"),
        Gpu("3060", 12288, True, "GeForce RTX 3060 12 GB"),
        Gpu("t4", 15360, False, "NVIDIA T4 16 GB (Colab / AWS g4dn)"),
        Gpu("v100-32gb", 32768, False, "NVIDIA V100 32 GB"),
        Gpu("v100-16gb", 16384, False, "NVIDIA V100 16 GB"),
        Gpu("mi300x", 196592, True, "AMD Instinct MI300X 192 GB"),
    ]
}


def find_gpu(name: str) -> Gpu:
    """The catalogue entry for `name` (case-insensitive); ConfigError naming the closest one otherwise."""
    key = str(name).strip().lower()
    if key in GPUS:
        return GPUS[key]
    raise ConfigError(
        f"--gpu: unknown GPU '{name}'{closest(key, GPUS)}; known: {', '.join(GPUS)} "
        f"(or give --memory SIZE, e.g. --memory 24GiB)"
    )
