"""The distill stage: teachers, logit/feature KD with projections, MiniLM relations."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import compressor
from compressor.errors import StageError
from compressor.transformer_layers import transformer_layers
from compressor.stages.distill.losses import AttentionRelations, FeatureHints, output_loss
from compressor.zoo.digits import DigitsCNN
from tiny_bert import prune_all, tiny_embedder, token_inputs

PRUNE = {"prune": {"sparsity": 0.5, "round_to": 8}}
QUICK = {"epochs": 2, "lr": 0.003, "max_steps_per_epoch": 6}


def _recipe(stages: list[dict]) -> dict:
    return {"model": {"zoo": "digits_cnn"}, "data": {"batch_size": 128},
            "report": {"latency": "off"}, "stages": stages}


def test_logit_kd_is_zero_for_equal_logits_and_scaled_by_t_squared() -> None:
    logits = torch.randn(8, 10)
    assert output_loss(logits, logits, "kl", 4.0).abs() < 1e-6
    other = torch.randn(8, 10)
    soft = torch.nn.functional.kl_div(torch.log_softmax(logits / 4, -1), torch.softmax(other / 4, -1),
                                      reduction="batchmean")
    assert torch.allclose(output_loss(logits, other, "kl", 4.0), soft * 16)


def test_distill_from_the_model_before_pruning_with_feature_hints(tmp_path: Path) -> None:
    report = compressor.run(_recipe([PRUNE, {"distill": {
        "teacher": "before:prune", "task_weight": 0.5,
        "features": {"weight": 1.0, "layers": {"features.3": "features.3"}}, "finetune": QUICK}}]),
        run_dir=tmp_path / "run")
    baseline, pruned, distilled = report.rows
    assert distilled["teacher_quality"] == pytest.approx(baseline["quality"])
    assert distilled["quality"] > pruned["quality"] + 0.3
    assert distilled["params"] == pruned["params"]  # projections are not part of the student


def test_feature_hints_project_narrow_student_features_and_train_the_projection() -> None:
    teacher, student = DigitsCNN(width=16).eval(), DigitsCNN(width=8)
    x = torch.rand(4, 1, 8, 8)
    hints = FeatureHints(student, teacher, {"features.1": "features.1"}, (x,))
    (projection,) = hints.projections.values()
    assert (projection.in_channels, projection.out_channels) == (16, 32)
    teacher(x)
    student(x)
    hints.loss().backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    hints.remove()
    assert not teacher.features[1]._forward_hooks


def test_minilm_relations_vanish_for_the_teacher_and_teach_a_head_pruned_student() -> None:
    teacher = tiny_embedder()
    ids, mask = token_inputs()
    same = AttentionRelations(transformer_layers(teacher), transformer_layers(teacher), {0: 0, 1: 1}, ["qk", "vv"], 4)
    teacher(ids, mask)
    assert same.loss(mask) < 1e-6
    same.remove()
    student = copy.deepcopy(teacher)
    prune_all(student, "heads", 0.5)  # 2 heads of 8 dims left; relations use 4 heads of the 16 dims
    relations = AttentionRelations(transformer_layers(student), transformer_layers(teacher), {1: 1}, ["qk", "vv"], 4)
    with torch.no_grad():
        teacher(ids, mask)
    student(ids, mask)
    loss = relations.loss(mask)
    assert loss > 1e-5
    loss.backward()
    assert transformer_layers(student)[1].qkv[0].weight.grad.abs().sum() > 0
    with pytest.raises(StageError, match="does not divide"):
        AttentionRelations(transformer_layers(student), transformer_layers(teacher), {1: 1}, ["qk"], 3)


def test_teacher_from_a_checkpoint_and_bad_teachers(tmp_path: Path) -> None:
    first = compressor.run(_recipe([{"finetune": {"epochs": 1, "max_steps_per_epoch": 2}}]),
                           run_dir=tmp_path / "teacher")
    ckpt = Path(first.run_dir) / "checkpoints" / "01-finetune.pt"
    report = compressor.run(_recipe([PRUNE, {"distill": {"teacher": str(ckpt), "finetune": QUICK}}]),
                            run_dir=tmp_path / "student")
    assert report.rows[-1]["teacher_quality"] == pytest.approx(first.rows[-1]["quality"])
    with pytest.raises(StageError, match="no stage named 'quantize'"):
        compressor.run(_recipe([PRUNE, {"distill": {"teacher": "before:quantize"}}]), run_dir=tmp_path / "bad")
    with pytest.raises(StageError, match="every loss weight is 0"):
        compressor.run(_recipe([{"distill": {"kd": {"weight": 0}}}]), run_dir=tmp_path / "zero")
