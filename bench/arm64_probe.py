"""Save the graph ONNX Runtime runs for a model, and what the CPU offers int8 kernels; prints JSON.

    python arm64_probe.py MODEL.onnx OPTIMIZED.onnx

Run by bench/arm64_check.py with the host's Python and with the arm64 tree's under qemu; needs
only onnxruntime and the standard library. The session uses infer.py's settings (ORT's default,
all graph optimizations), so the saved graph holds the kernels the bundle's example runs.
"""
from __future__ import annotations

import json
import platform
import struct
import sys

import onnxruntime as ort

#: Auxiliary-vector keys and the arm64 HWCAP bits MLAS picks its int8 GEMM by (Linux uapi hwcap.h).
AT_HWCAP, AT_HWCAP2 = 16, 26
ARM_FEATURES = {"asimddp": (AT_HWCAP, 20), "sve": (AT_HWCAP, 22), "i8mm": (AT_HWCAP2, 13)}
#: The x86 flags that decide MLAS's int8 GEMM (u8s8 through vpmaddubsw saturates without VNNI).
X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def arm_features(auxv: bytes) -> list[str]:
    """The int8-relevant features in a ``/proc/self/auxv`` image (64-bit little-endian key/value pairs),
    i.e. what the kernel (here: qemu) tells this process the core has."""
    aux = dict(struct.iter_unpack("<QQ", auxv))
    return [name for name, (key, bit) in ARM_FEATURES.items() if aux.get(key, 0) >> bit & 1]


def x86_features(cpuinfo: str) -> list[str]:
    """The int8-relevant flags of the first processor in a ``/proc/cpuinfo`` text."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [name for name in X86_FEATURES if name in flags]


def features() -> list[str]:
    if platform.machine() == "aarch64":
        with open("/proc/self/auxv", "rb") as f:
            return arm_features(f.read())
    with open("/proc/cpuinfo") as f:
        return x86_features(f.read())


def main(model: str, optimized: str) -> None:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = optimized
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    print(json.dumps({"machine": platform.machine(), "onnxruntime": ort.__version__, "features": features()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
