"""The hardware SKUs a deployment can ask for (Replicate's names, so existing code works)."""

from __future__ import annotations

HARDWARE = {
    "cpu": "CPU",
    "gpu-t4": "Nvidia T4 GPU",
    "gpu-l40s": "Nvidia L40S GPU",
    "gpu-a40-large": "Nvidia A40 (Large) GPU",
    "gpu-a100-large": "Nvidia A100 (80GB) GPU",
    "gpu-h100": "Nvidia H100 GPU",
    "gpu-h200": "Nvidia H200 GPU",
}
DEFAULT_HARDWARE = "cpu"


def hardware_list() -> list[dict[str, str]]:
    return [{"sku": sku, "name": name} for sku, name in HARDWARE.items()]
