"""Quantizers, observers, placement, ONNX Q/DQ export and the quantize stage."""
from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import compressor
from compressor.export.onnx import export_onnx
from compressor.export.qdq_rules import check_trt
from compressor.export.runtime import ort_session
from compressor.layers import LayerSelection
from compressor.stages.quantize import TensorQuantizer, quantizers
from compressor.stages.quantize.bnfold import find_conv_bn_pairs, fold_batchnorm
from compressor.stages.quantize.calibrate import calibrate
from compressor.stages.quantize.observers import make_observer
from compressor.stages.quantize.placement import (TensorPlan, insert_add_quantizers, plan_layers,
                                                   residual_adds, share_quantizers,
                                                   shared_quantizer_groups, wrap_layers)
from compressor.stages.quantize.rounding import comq_round
from compressor.stages.quantize.smoothquant import input_channel_max, smooth, smooth_groups
from compressor.zoo.resnet import BasicBlock


def op_counts(path: Path, optimized: bool = False) -> Counter:
    if optimized:
        import onnxruntime as ort

        out = path.with_suffix(".opt.onnx")
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        path = out
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


class Residual(nn.Module):
    """conv-bn-relu, then a residual block (the Add that placement must quantize)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.relu(self.conv2(self.relu(self.conv1(x))) + x)
        return self.head(y.mean((2, 3)))


def quantize_residual(mode: str, seed: int = 0, model: nn.Module | None = None,
                      weight_bits: int = 8) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = (model or Residual()).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    reference = copy.deepcopy(model)
    x = torch.randn(8, 3, 16, 16)
    fold_batchnorm(model, find_conv_bn_pairs(model, (x,)))
    act = TensorPlan(8, observer="minmax")
    model = insert_add_quantizers(model, residual_adds(model, mode), act)
    wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(weight_bits), act, True))
    share_quantizers(model, shared_quantizer_groups(model, (x,)))
    calibrate(model, [(torch.randn(8, 3, 16, 16),) for _ in range(3)])
    return model, reference, x


# --------------------------------------------------------------------------- quantizers
def test_int8_per_channel_matches_the_grid_and_stays_narrow() -> None:
    w = torch.randn(6, 5) * torch.arange(1, 7)[:, None]
    q = TensorQuantizer(8, axis=0, channels=6, narrow=True)
    q.start_calibration()
    q(w)
    q.load_calibration()
    out = q(w)
    s = w.abs().amax(1, keepdim=True) / 127
    assert torch.allclose(out, torch.round(w / s).clamp(-127, 127) * s, atol=1e-6)
    q.set_amax(w.abs().amax(1) * 0.5)  # clipping: nothing may land on -128
    assert (q(w) / (q.scale[:, None])).round().min() >= -127


def test_int4_and_fp8_grids_and_lsq_gradient() -> None:
    x = torch.linspace(-3, 3, 101)
    q4 = TensorQuantizer(4, narrow=True)
    q4.set_amax(torch.tensor(3.0))
    assert len(torch.unique(q4(x))) == 15
    fp8 = TensorQuantizer(8, fmt="fp8")
    fp8.set_amax(torch.tensor(3.0))
    y = fp8(x) / fp8.scale
    assert torch.allclose(y, y.to(torch.float8_e4m3fn).float(), rtol=1e-5)
    scale = q4.learnable()
    q4.train()
    q4(x * 2).pow(2).sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    q4.freeze()
    assert "scale" in dict(q4.named_buffers())


def test_only_activations_never_negative_get_the_unsigned_grid() -> None:
    relu_out, signed = torch.rand(4000) * 6, torch.randn(4000)
    for x, unsigned in ((relu_out, True), (signed, False)):
        q = TensorQuantizer(8, observer="minmax")
        q.start_calibration()
        q(x)
        q.load_calibration(unsigned_if_nonnegative=True)
        assert q.unsigned is unsigned and (q.qmin, q.qmax) == ((0, 255) if unsigned else (-128, 127))
        levels = torch.round(q(x) / q.scale)
        assert levels.min() >= q.qmin and levels.abs().max() == q.qmax  # min-max: the largest |x| on the top level
    # a weight (per channel) and an 8-bit grid not asked for stay signed
    w = TensorQuantizer(8, axis=0, channels=4, narrow=True)
    w.start_calibration()
    w(torch.rand(4, 9))
    w.load_calibration(unsigned_if_nonnegative=True)
    plain = TensorQuantizer(8, observer="minmax")
    plain.start_calibration()
    plain(relu_out)
    plain.load_calibration()
    assert not w.unsigned and not plain.unsigned


@pytest.mark.parametrize("name", ["minmax", "percentile", "mse", "entropy"])
def test_observers_clip_outliers_except_minmax(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(20000)
    x[:3] = 80.0  # a few outliers
    obs = make_observer(name, None, percentile=99.9)
    obs.update(x[:10000])
    obs.update(x[10000:])
    amax = float(obs.amax(127.0))
    if name == "minmax":
        assert amax == 80.0
    elif name == "mse":  # 3 outliers cost more clipped than the rounding error they cause
        assert 40.0 < amax < 80.0, amax
    else:
        assert 2.0 < amax < 40.0, amax


def test_per_channel_mse_observer_clips_each_channel() -> None:
    w = torch.randn(4, 512)
    w[0, 0] = 40.0
    amax = make_observer("mse", 0).__class__(0)
    amax.update(w)
    values = amax.amax(7.0)
    assert values[0] < 40.0 and values.shape == (4,)


# --------------------------------------------------------------------------- placement and export
def test_bn_fold_keeps_the_function() -> None:
    model, reference, x = quantize_residual("none")
    for q in quantizers(model).values():
        q.enabled = False
    assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert isinstance(model.stem[1], nn.Identity)


def test_ort_export_fuses_every_conv_into_int8_kernels_and_its_twin_parses_in_tensorrt(tmp_path: Path) -> None:
    model, reference, x = quantize_residual("both")
    path = export_onnx(model, (x,), tmp_path / "q.onnx", input_names=["x"], output_names=["y"],
                       dynamic_axes={"x": {0: "b"}})
    fused = op_counts(path, optimized=True)
    assert fused["QLinearConv"] == 3 and fused["Conv"] == 0, fused
    assert fused["QGemm"] == 1 and fused["Gemm"] == 0, fused  # the head: bias moved after it
    graph = onnx.load(str(path))
    # x86: uint8 weights (exact u8u8 kernels, export/ort_kernels.py), which only TensorRT refuses;
    # float biases: ORT quantizes them to int32 itself at load
    assert {v.rule for v in check_trt(graph)} == {"signed-int8", "zero-point"}
    trt = export_onnx(model, (x,), tmp_path / "trt.onnx", input_names=["x"], output_names=["y"], runtime="tensorrt")
    assert check_trt(onnx.load(str(trt))) == []
    biases = [i for n in graph.graph.node if n.op_type == "Conv" and len(n.input) == 3 for i in n.input[2:]]
    assert biases and all(b in {t.name for t in graph.graph.initializer} for b in biases)
    out = ort_session(path).run(None, {"x": x.numpy()})[0]
    expected = model(x).detach().numpy()
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()


def test_resnet_stages_run_every_conv_and_residual_add_in_int8_kernels(tmp_path: Path) -> None:
    # a stage with a strided downsample shortcut: the block input feeds two convs, each block output
    # a conv and the next Add. Each reader gets its own DQ of one Q, and every activation pair is
    # uint8 in the file, so ORT never sees a Conv between pairs of two types (ORT converts int8
    # pairs itself only where one DQ reads the Q: after onnxslim merged the copies, ResNet-18 ran
    # 9 of its 20 convs in int8, 0.93x fp32; all 20 now, 0.56x)
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    net = nn.Sequential(stem, BasicBlock(16, 32, stride=2), BasicBlock(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 4))
    model, _, x = quantize_residual("both", model=net, weight_bits=7)  # cpu-x86's weights
    path = export_onnx(model, (x,), tmp_path / "q.onnx", input_names=["x"], output_names=["y"], cpu="x86_64",
                       simplify=True)  # as the export stage does: onnxslim merges equal Q/DQ copies
    fused = op_counts(path, optimized=True)
    assert fused["QLinearConv"] == 6 and fused["Conv"] == 0, fused
    # the last residual Add feeds a float pooling; the head's bias Add follows its QGemm
    assert fused["QLinearAdd"] == 1 and fused["Add"] == 2, fused
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points == {onnx.TensorProto.UINT8}
    out = ort_session(path).run(None, {"x": x.numpy()})[0]
    expected = model(x).detach().numpy()
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()


def test_a_conv_with_float_output_gets_float_weights_for_ort(tmp_path: Path) -> None:
    # conv -> relu -> conv -> relu -> pool -> linear: the second conv's output is not quantized, so
    # ORT cannot fuse it and would dequantize its weights at every run; they are stored as floats
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 1, 8, 8)
    wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(8), TensorPlan(8, observer="minmax"), True))
    calibrate(model, [(torch.randn(4, 1, 8, 8),) for _ in range(2)])
    path = export_onnx(model, (x,), tmp_path / "q.onnx", input_names=["x"], output_names=["y"])
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert [c.input[1] in inits for c in convs] == [False, True]  # first: DQ(int8), second: float
    fused = op_counts(path, optimized=True)
    assert fused["QLinearConv"] == 1, fused
    out = ort_session(path).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_relu6_convs_keep_per_channel_int8_weights_and_fuse_for_ort(tmp_path: Path) -> None:
    # MobileNetV2's block: depthwise conv -> ReLU6 (Clip) -> 1x1 conv. The Clip must get its own
    # Q/DQ input pair, or the depthwise conv keeps float weights that ORT requantizes per tensor
    # (channel ranges differing 100x, as after BN folding, then lose most of their precision)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
                          nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with torch.no_grad():
        model[2].weight.mul_(torch.logspace(-2, 0, 8)[:, None, None, None])
    x = torch.rand(4, 3, 8, 8) * 4
    wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(7), TensorPlan(8, observer="minmax"), True))
    calibrate(model, [(torch.rand(4, 3, 8, 8) * 4,) for _ in range(2)])
    path = export_onnx(model, (x,), tmp_path / "q.onnx", input_names=["x"], output_names=["y"])
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    assert [c.input[1] in inits for c in graph.node if c.op_type == "Conv"] == [False, False, True]  # last: float out
    assert op_counts(path, optimized=True)["QLinearConv"] == 2
    out = ort_session(path).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_unsigned_activations_on_x86_restore_and_let_ort_drop_the_relus(tmp_path: Path) -> None:
    # cpu-x86: every activation after a ReLU calibrates to uint8 with zero point 0, so ONNX Runtime
    # removes the ReLU before each Q (its output is already >= 0) and fuses what is left
    report = compressor.run(_recipe([{"quantize": {"activations": {"observer": "minmax"}, "placement": "all"}},
                                     {"export": {"simplify": False}}]), run_dir=tmp_path / "run")
    ckpt = Path(report.run_dir) / "checkpoints" / "01-quantize.pt"
    restored = compressor.load_model(ckpt)
    acts = {n: q for n, q in quantizers(restored).items() if q.axis is None}
    assert acts and all(q.unsigned for q in acts.values()), {n: q.unsigned for n, q in acts.items()}
    path = Path(report.artifacts["onnx"])
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    zeros = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zeros and all(z.dtype == np.uint8 and int(z) == 0 for z in zeros)
    fused = op_counts(path, optimized=True)
    assert fused["Relu"] == 0 and fused["QLinearConv"] == 2, fused
    x = torch.rand(32, 1, 8, 8)
    session = ort_session(path)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    expected = restored(x).detach().numpy().ravel()
    cosine = float(np.dot(out.ravel(), expected) / np.linalg.norm(out) / np.linalg.norm(expected))
    assert cosine > 0.999


def test_tensorrt_export_quantizes_the_residual_and_follows_the_rules(tmp_path: Path) -> None:
    model, _, x = quantize_residual("residual")
    path = export_onnx(model, (x,), tmp_path / "q.onnx", input_names=["x"], output_names=["y"],
                       runtime="tensorrt")
    graph = onnx.load(str(path))
    assert check_trt(graph) == []
    add = next(n for n in graph.graph.node if n.op_type == "Add")
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    assert "DequantizeLinear" in [producers.get(i) for i in add.input]
    weights = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
    assert len(weights) == 4  # every weight stored as int8


def test_per_layer_bits_32_and_enabled_false_keep_layers_float() -> None:
    model = Residual()
    sel = LayerSelection(per_layer={"conv1": {"bits": 32, "act_bits": 32}, "head": {"enabled": False},
                                    "conv2": {"bits": 4}})
    plans = plan_layers(model, sel, TensorPlan(8), TensorPlan(8), True)
    assert "conv1" not in plans and "head" not in plans
    assert plans["conv2"].weight.bits == 4 and plans["stem.0"].weight.bits == 8


# --------------------------------------------------------------------------- transformer outliers
class TinyBlock(nn.Module):
    """LayerNorm -> (q, k) Linears sharing the input; activations with an outlier channel."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(32)
        self.q = nn.Linear(32, 32)
        self.k = nn.Linear(32, 32)
        with torch.no_grad():
            self.ln.weight[3] = 60.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        return self.q(h) + self.k(h) + h


def test_smoothquant_keeps_the_float_model_and_cuts_int8_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [(torch.randn(16, 8, 32),) for _ in range(4)]
    x = data[0][0]
    errors = {}
    for use_smooth in (False, True):
        model = TinyBlock().eval()
        reference = model(x)
        wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(8),
                                       TensorPlan(8, observer="minmax"), True))
        share_quantizers(model, shared_quantizer_groups(model, (x,)))
        assert model.q.input_quantizer is model.k.input_quantizer
        if use_smooth:
            groups = smooth_groups(model)
            assert list(groups.values()) == [["q", "k"]]
            assert smooth(model, groups, input_channel_max(model, list(groups), data), alpha=0.5) == list(groups)
            for q in quantizers(model).values():
                q.enabled = False
            assert torch.allclose(model(x), reference, atol=1e-4)
            for q in quantizers(model).values():
                q.enabled = True
        calibrate(model, data)
        errors[use_smooth] = float((model(x) - reference).detach().pow(2).mean())
    assert errors[True] < 0.5 * errors[False], errors
    # ONNX Runtime: the smoothing factors export as one multiply in front of the shared Q, and q
    # and k (one input) as one int8 kernel on their packed weights, bias inside, split after it
    path = export_onnx(model, (x,), tmp_path / "s.onnx", input_names=["x"], output_names=["y"])
    ops = op_counts(path)
    assert ops["Mul"] == 1 and ops["MatMulIntegerToFloat"] == 1 and ops["Split"] == 1, ops
    assert ops["MatMul"] == ops["Transpose"] == ops["DequantizeLinear"] == 0, ops
    # TensorRT: plain Q/DQ within its rules
    trt = export_onnx(model, (x,), tmp_path / "t.onnx", input_names=["x"], output_names=["y"], runtime="tensorrt")
    assert op_counts(trt)["MatMul"] == 2 and check_trt(onnx.load(str(trt))) == []
    for file in (path, trt):
        out = ort_session(file).run(None, {"x": x.numpy()})[0]
        assert np.abs(out - model(x).detach().numpy()).max() < 1e-3 * np.abs(out).max() + 1e-4


def test_smoothquant_skips_tensors_without_outliers() -> None:
    torch.manual_seed(0)
    data = [(torch.randn(16, 8, 32),) for _ in range(2)]
    model = TinyBlock().eval()
    wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(8), TensorPlan(8), True))
    share_quantizers(model, shared_quantizer_groups(model, data[0]))
    groups = smooth_groups(model)
    act_max = input_channel_max(model, list(groups), data)
    ratio = float(next(iter(act_max.values())).max() / next(iter(act_max.values())).median())
    weights = model.q.weight.detach().clone()
    assert smooth(model, groups, act_max, min_outlier_ratio=2 * ratio) == []
    assert model.q.input_quantizer.smooth is None and torch.equal(model.q.weight, weights)
    assert smooth(model, groups, act_max, min_outlier_ratio=ratio / 2) == list(groups)


def test_comq_rounding_beats_nearest_on_the_layer_output() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 6) @ torch.randn(6, 24) + 0.1 * torch.randn(512, 24)  # correlated inputs
    w = torch.randn(16, 24)
    scale = w.abs().amax(1) / 7
    nearest = torch.clamp(torch.round(w / scale[:, None]), -7, 7) * scale[:, None]
    comq = comq_round(w, scale, x.T @ x, -7, 7)
    assert torch.allclose(comq / scale[:, None], (comq / scale[:, None]).round(), atol=1e-4)
    err = lambda q: float((x @ (w - q).T).pow(2).sum())  # noqa: E731
    assert err(comq) < 0.8 * err(nearest)


# --------------------------------------------------------------------------- the stage
def _recipe(stages: list[dict], target: str = "cpu-x86") -> dict:
    return {"name": "q", "model": {"zoo": "digits_cnn"}, "target": target, "data": {"batch_size": 128},
            "report": {"latency": "off"}, "stages": stages}


@pytest.mark.slow
def test_ptq_stage_exports_qdq_and_checkpoint_restores(tmp_path: Path) -> None:
    report = compressor.run(_recipe([
        {"quantize": {"activations": {"observer": "percentile"}, "per_layer": {"classifier": {"bits": 32}}}},
        {"export": {"simplify": False, "parity": {"atol": 0.5, "min_cosine": 0.99}}}], target="jetson-orin"),
        run_dir=tmp_path / "run")
    base, row = report.rows[0], report.rows[1]
    assert row["quality"] >= base["quality"] - 0.02
    assert row["size_bytes"] < 0.4 * base["size_bytes"]
    graph = onnx.load(report.artifacts["onnx"])
    assert op_counts(Path(report.artifacts["onnx"]))["DequantizeLinear"] > 0
    assert check_trt(graph) == []
    ckpt = Path(report.run_dir) / "checkpoints" / "01-quantize.pt"
    restored = compressor.load_model(ckpt)
    assert restored.classifier.weight_quantizer is None
    x = torch.rand(16, 1, 8, 8)
    from compressor.checkpoint import restore

    again = restore(ckpt)
    assert torch.equal(restored(x), again(x))
    assert float(restored.features[0][0].input_quantizer.scale) != 1.0


@pytest.mark.slow
def test_qat_int4_weights_trains_scales_and_restores(tmp_path: Path) -> None:
    report = compressor.run(_recipe([{"quantize": {
        "mode": "qat", "weights": {"bits": 4}, "rounding": {"method": "comq"}, "distill": 0.5,
        "finetune": {"epochs": 1, "lr": 1e-4, "max_steps_per_epoch": 3}}}]), run_dir=tmp_path / "run")
    row = report.rows[1]
    assert len(row["quality_per_epoch"]) == 2 and row["comq_layers"] == 4
    model = compressor.load_model(Path(report.run_dir) / "checkpoints" / "01-quantize.pt")
    w = model.features[0][0]
    levels = torch.round(w.weight_quantizer(w.weight) / w.weight_quantizer.scale[:, None, None, None])
    assert levels.abs().max() <= 7
    assert not any(isinstance(p, nn.Parameter) for p in w.weight_quantizer.buffers())


def test_sensitivity_command_writes_table_and_plot(tmp_path: Path) -> None:
    import yaml

    from compressor.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe([{"quantize": {"weights": {"bits": 2}}}])))
    assert main(["sensitivity", str(recipe), "--samples", "32", "--out", str(tmp_path / "s")]) == 0
    import json

    drops = json.loads((tmp_path / "s" / "sensitivity.json").read_text())["drops"]
    assert set(drops) == {"features.0.0", "features.1.0", "features.3.0", "classifier"}
    assert max(drops.values()) > 0
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 1000


def _file_weights(path: str) -> list[np.ndarray]:
    """The integer weight initializers (2-D and up) of an ONNX file."""
    graph = onnx.load(path).graph
    return [onnx.numpy_helper.to_array(i) for i in graph.initializer
            if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(i.dims) > 1]


@pytest.mark.parametrize("target, bits, dtype, largest", [
    ("cpu-x86", None, np.int8, 63),     # 7-bit: ORT's fast u8s8 kernels cannot saturate on them
    ("cpu-x86", 8, np.uint8, 127),      # 8-bit asked for: stored uint8 for the exact u8u8 kernels
    ("cpu-arm64", None, np.int8, 127),  # ARM's int8 kernels have no such overflow
], ids=["x86-default", "x86-8bit", "arm64"])
def test_weight_bits_follow_the_target_and_export_as_integers(tmp_path: Path, target: str, bits: int | None,
                                                               dtype: type, largest: int) -> None:
    weights = {"bits": bits} if bits else {}
    report = compressor.run(_recipe([{"quantize": {"weights": weights, "activations": {"observer": "minmax"},
                                                   "placement": "all"}},
                                     {"export": {"simplify": False}}], target=target), run_dir=tmp_path / "run")
    stored = _file_weights(report.artifacts["onnx"])
    assert stored and all(w.dtype == dtype for w in stored)
    centred = [w.astype(np.int16) - (128 if dtype == np.uint8 else 0) for w in stored]
    assert max(int(np.abs(w).max()) for w in centred) == largest
    assert report.rows[-1]["quality"] >= report.rows[0]["quality"] - 0.02


def test_low_bit_weights_export_as_int8_initializers(tmp_path: Path) -> None:
    """4-bit weights are clipped to their grid before the int8 Q; export folds the clip, so the
    layer stores int8 values in [-7, 7] and runs as an int8 kernel instead of in float."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()  # the last conv's output stays float: float weights
    act = TensorPlan(8, observer="minmax")
    wrap_layers(model, plan_layers(model, LayerSelection(), TensorPlan(4), act, True))
    x = torch.randn(4, 3, 8, 8)
    calibrate(model, [(torch.randn(4, 3, 8, 8),) for _ in range(2)])
    path = export_onnx(model, (x,), tmp_path / "w4.onnx", input_names=["x"], output_names=["y"], cpu="x86_64")
    stored = _file_weights(str(path))
    assert len(stored) == 2 and all(w.dtype == np.int8 and np.abs(w).max() <= 7 for w in stored)
    assert op_counts(path)["Min"] == 0
    out = ort_session(path).run(None, {"x": x.numpy()})[0]
    expected = model(x).detach().numpy()
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()
