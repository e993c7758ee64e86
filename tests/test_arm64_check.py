"""bench/arm64_check.py's pieces that need no emulator and no network.

The emulated run itself (mmdebstrap, qemu, the aarch64 wheels) is `make arm64-check`; its figures
are in docs/export.md.
"""
from __future__ import annotations

import json
import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from packaging.tags import cpython_tags
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import arm64_check  # noqa: E402
import arm64_probe  # noqa: E402
import arm64_tree  # noqa: E402
from arm64_tree import EmulatorUnavailable, Tree  # noqa: E402

#: The wheels `make arm64-check` installed (onnxruntime's tag is newer than manylinux2014).
WHEELS = ["onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl",
          "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"]


def fake_tree(root: Path, python: str = "python3.11", banner: bytes = b"stable release version 2.36.") -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / python).write_text("")
    (root / "usr" / "bin" / "python3").symlink_to(python)
    libc = root / "lib" / "aarch64-linux-gnu" / "libc.so.6"
    libc.parent.mkdir(parents=True)
    libc.write_bytes(b"\x7fELF\x00GNU C Library (Debian GLIBC 2.36-9) " + banner + b"\x00")
    return root


def test_the_trees_python_and_glibc_are_read_from_its_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "tree")
    assert arm64_tree.python_version(root) == "3.11"
    assert arm64_tree.glibc_version(root) == (2, 36)
    with pytest.raises(EmulatorUnavailable, match="expected python3.N"):
        arm64_tree.python_version(fake_tree(tmp_path / "odd", python="pypy3"))
    with pytest.raises(EmulatorUnavailable, match="no glibc version banner"):
        arm64_tree.glibc_version(fake_tree(tmp_path / "stripped", banner=b""))


def test_platform_tags_accept_every_older_manylinux_wheel() -> None:
    tags = arm64_tree.platform_tags((2, 36))
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert len(tags) == 36 - 17 + 1 + 1 and "manylinux_2_28_aarch64" in tags
    # pip's own matching (packaging.tags): the wheels the tree got are installable with these tags.
    supported = set(cpython_tags((3, 11), abis=["cp311"], platforms=tags))
    for wheel in WHEELS:
        assert parse_wheel_filename(wheel)[3] & supported, wheel
    # ... and a wheel needing a newer glibc than the tree's is not.
    assert not parse_wheel_filename("x-1-cp311-cp311-manylinux_2_39_aarch64.whl")[3] & supported
    with pytest.raises(EmulatorUnavailable, match="glibc 2.17 or newer"):
        arm64_tree.platform_tags((2, 16))


def test_pip_commands_download_then_install_offline_for_the_trees_python(tmp_path: Path) -> None:
    reqs = ["onnxruntime==1.32.0", "numpy==2.4.6"]
    download = arm64_tree.pip_command("download", "3.11", (2, 28), reqs, wheels=tmp_path / "w")
    install = arm64_tree.pip_command("install", "3.11", (2, 28), reqs, wheels=tmp_path / "w",
                                     target=tmp_path / "site")
    for command in (download, install):
        assert command[:4] == [sys.executable, "-m", "pip", command[3]]
        assert {"--only-binary=:all:", "--no-deps"} <= set(command) and command[-2:] == reqs
        pairs = dict(zip(command, command[1:]))
        assert pairs["--python-version"] == "3.11" and pairs["--abi"] == "cp311" and pairs["--implementation"] == "cp"
        platforms = [b for a, b in zip(command, command[1:]) if a == "--platform"]
        assert platforms == arm64_tree.platform_tags((2, 28))
    assert download[3] == "download" and dict(zip(download, download[1:]))["--dest"] == str(tmp_path / "w")
    assert "--no-index" not in download
    pairs = dict(zip(install, install[1:]))
    assert install[3] == "install" and "--no-index" in install  # no network at install time
    assert pairs["--find-links"] == str(tmp_path / "w") and pairs["--target"] == str(tmp_path / "site")


def test_wheels_are_downloaded_once_and_the_install_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Tree(fake_tree(tmp_path / "arm64" / "bookworm"), qemu="/usr/bin/qemu-aarch64-static")
    calls: list[list[str]] = []

    def fake_pip(command: list[str]) -> None:
        calls.append(command)
        if command[3] == "download":
            dest = Path(command[command.index("--dest") + 1])
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl").write_text("")
        else:
            Path(command[command.index("--target") + 1]).mkdir(parents=True)

    monkeypatch.setattr(arm64_tree, "_pip", fake_pip)
    reqs = ["numpy==2.4.6"]
    assert arm64_tree.install_wheels(tree, reqs) == tree.site
    assert [c[3] for c in calls] == ["download", "install"]
    assert (tree.site / "requirements.txt").read_text().split() == reqs
    arm64_tree.install_wheels(tree, reqs)  # same requirements: nothing to do
    assert len(calls) == 2
    arm64_tree.install_wheels(tree, ["numpy==2.4.6", "onnxruntime==1.32.0"])  # numpy's wheel is cached
    assert [c[3] for c in calls[2:]] == ["download", "install"] and calls[2][-1:] == ["onnxruntime==1.32.0"]


def test_the_emulated_python_sees_only_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHOME", "/host")
    monkeypatch.setenv("VIRTUAL_ENV", "/host/.venv")
    tree = Tree(tmp_path, qemu="/usr/bin/qemu-aarch64-static", core="cortex-a76")
    assert tree.command("infer.py") == ["/usr/bin/qemu-aarch64-static", "-cpu", "cortex-a76", "-L", str(tmp_path),
                                        str(tmp_path / "usr/bin/python3"), "-s", "infer.py"]
    env = tree.env()
    assert env["PYTHONPATH"] == str(tmp_path / "opt" / "site") and env["PYTHONNOUSERSITE"] == "1"
    assert "PYTHONHOME" not in env and "VIRTUAL_ENV" not in env


def test_cpuinfo_names_the_emulated_core_on_every_possible_cpu(tmp_path: Path) -> None:
    assert arm64_tree.possible_cpus("0-3,6\n") == [0, 1, 2, 3, 6] and arm64_tree.possible_cpus("0") == [0]
    arm64_tree.write_cpuinfo(tmp_path, "neoverse-n1", [0, 1])
    text = (tmp_path / "proc" / "cpuinfo").read_text()
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd0c" in text and "CPU implementer\t: 0x41" in text
    with pytest.raises(EmulatorUnavailable, match="--cpu 'max'"):
        arm64_tree.build_tree(tmp_path, core="max")


def test_comparison_reports_the_worst_output() -> None:
    rng = np.random.default_rng(0)
    a = {"logits": rng.standard_normal((4, 10)).astype(np.float32),
         "emb": rng.standard_normal((4, 8)).astype(np.float32)}
    same = arm64_check.compare_outputs(a, {k: v.copy() for k, v in a.items()})
    assert same.max_abs == 0 and same.cosine == pytest.approx(1.0) and same.top1_agreement == 1.0
    b = {"logits": a["logits"].copy(), "emb": a["emb"].copy()}
    b["emb"][2, 3] += 0.5
    b["logits"][0] = -a["logits"][0]  # one sample flipped: cosine -1 for it, arg-max changes
    worst = arm64_check.compare_outputs(a, b)
    assert worst.max_abs == pytest.approx(max(0.5, 2 * np.abs(a["logits"][0]).max()))
    assert worst.cosine == pytest.approx(0.5, abs=1e-6) and worst.top1_agreement == 0.75
    with pytest.raises(ValueError, match="outputs differ"):
        arm64_check.compare_outputs(a, {"logits": a["logits"]})


def test_pytorch_verdict_applies_the_bundles_tolerance_like_infer_py(tmp_path: Path) -> None:
    expected = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32)
    np.savez(tmp_path / "sample.npz", image=np.zeros((4, 1)), **{"expected.logits": expected})
    manifest = {"sample": {"file": "sample.npz", "expected": "expected.logits"}, "outputs": [{"name": "logits"}],
                "models": {"onnx": {"tolerance": {"atol": None, "min_cosine": 0.999}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert arm64_check.pytorch_verdict(tmp_path, {"logits": expected}) == "ok (cosine 1.000000)"
    flipped = expected.copy()
    flipped[0] *= -1
    assert arm64_check.pytorch_verdict(tmp_path, {"logits": flipped}) == "MISMATCH (cosine 0.500000)"
    manifest["models"]["onnx"]["tolerance"]["atol"] = 1e-3
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert arm64_check.pytorch_verdict(tmp_path, {"logits": expected + 0.01}).startswith("MISMATCH (cosine 0.99")


def test_int8_ops_name_the_activation_type_and_skip_weight_storage() -> None:
    def init(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp_s8"], ["xq"]),
             helper.make_node("DequantizeLinear", ["w_int", "s", "zp_s8"], ["w"]),  # a stored weight
             helper.make_node("DequantizeLinear", ["xq", "s", "zp_s8"], ["xd"]),
             helper.make_node("Conv", ["xd", "w"], ["c"]),
             helper.make_node("MatMulIntegerToFloat", ["xq", "w_int", "s", "s", "zp_u8", "zp_s8"], ["m"],
                              domain="com.microsoft"),
             helper.make_node("Relu", ["c"], ["r"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [],
                              [init("s", np.float32(0.1)), init("zp_s8", np.int8(0)), init("zp_u8", np.uint8(128)),
                               init("w_int", np.ones((1, 1, 1, 1), np.int8))])
    ops = arm64_check.int8_ops(helper.make_model(graph))
    assert ops == Counter({"QuantizeLinear s8": 1, "DequantizeLinear s8": 1, "Conv": 1, "MatMulIntegerToFloat u8": 1})
    assert arm64_check.describe(ops).startswith("Conv ×1, DequantizeLinear s8 ×1")


def test_cpu_arm64_bundle_carries_int8_activations_and_saves_its_outputs(tmp_path: Path) -> None:
    recipe = arm64_check.bundle_recipe("digits_cnn", calibration_samples=16)
    assert recipe["target"] == "cpu-arm64" and recipe["data"]["calibration_samples"] == 16
    assert recipe["stages"][-1]["export"]["latency"] is False and recipe["report"] == {"latency": "off"}
    bundle = arm64_check.export_bundle("digits_cnn", tmp_path, calibration_samples=16)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["name"] == "cpu-arm64" and manifest["models"]["onnx"]["precision"] == "int8"
    ops = arm64_check.int8_ops(onnx.load(str(bundle / "model.onnx")))
    assert arm64_check.activation_types(ops) == {"s8"} and ops["QuantizeLinear s8"] >= 3
    # infer.py --save, run as the check runs it (a subprocess of this Python).
    outputs, seconds = arm64_check.run_infer([sys.executable], None, bundle, tmp_path / "out.npz")
    assert set(outputs) == {"logits"} and outputs["logits"].shape == (4, 10) and seconds > 0
    # x86 with int8 activations kept does the arithmetic the arm64 kernels do: it matches PyTorch
    # (infer.py's own run may not: u8s8 kernels saturate on x86 without VNNI, docs/export.md).
    kept = arm64_check.host_int8_outputs(bundle)
    assert manifest["models"]["onnx"]["tolerance"]["min_cosine"] == 0.999
    assert arm64_check.pytorch_verdict(bundle, kept).startswith("ok")


def test_probe_reads_the_int8_features_of_either_cpu() -> None:
    # AT_HWCAP (16) with asimddp (bit 20) and not sve (22); AT_HWCAP2 (26) with i8mm (bit 13).
    auxv = struct.pack("<6Q", 16, 1 << 20 | 1 << 1, 26, 1 << 13, 0, 0)
    assert arm64_probe.arm_features(auxv) == ["asimddp", "i8mm"]
    assert arm64_probe.arm_features(struct.pack("<2Q", 16, 1 << 22)) == ["sve"]
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert arm64_probe.x86_features(cpuinfo) == ["avx2", "avx512f", "avx512_vnni"]
    assert arm64_probe.x86_features("processor\t: 0\n") == []
