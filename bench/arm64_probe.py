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


def arm_features() -> list[str]:
    """The int8-relevant features the kernel (here: qemu) reports to this process."""
    with open("/proc/self/auxv", "rb") as f:
        aux = dict(struct.iter_unpack("<QQ", f.read()))
    return [name for name, (key, bit) in ARM_FEATURES.items() if aux.get(key, 0) >> bit & 1]


def x86_features() -> list[str]:
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return [name for name in X86_FEATURES if name in flags]


def main(model: str, optimized: str) -> None:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = optimized
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    machine = platform.machine()
    print(json.dumps({"machine": machine, "onnxruntime": ort.__version__,
                      "features": arm_features() if machine == "aarch64" else x86_features()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
