"""A corpus of malformed inputs (recipes, checkpoints, ONNX files, command-line arguments).

Each :class:`Case` writes its files into a fresh folder and returns the ``compressor`` arguments
that must fail with exit code 2 and one message naming the file (or option) and the problem.
tests/test_bad_inputs.py runs them.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from compressor.zoo.digits import DigitsCNN

Make = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    make: Make
    #: Words the error message must contain.
    words: str
    #: The file (or option) the message must name; "{tmp}" is the case's folder.
    names: str
    #: Run the CLI in a child process under a memory limit (cases that could exhaust memory).
    subprocess: bool = False


#: Random weights: nothing trains on first use.
GOOD_MODEL = "model: {zoo: digits_cnn, args: {pretrained: false}}\n"


# ----------------------------------------------------------------------------- builders
def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def recipe(text: str | bytes, *, name: str = "r.yaml", files: dict[str, str | bytes] | None = None,
           command: str = "validate", extra: tuple[str, ...] = ()) -> Make:
    """``compressor COMMAND r.yaml``, with ``files`` written beside the recipe."""
    def make(tmp: Path) -> list[str]:
        for rel, content in (files or {}).items():
            _write(tmp, rel, content)
        path = _write(tmp, name, text)
        out = ["--out", str(tmp / "run")] if command == "run" else []
        return [command, str(path), *out, *extra]
    return make


def factory(target: str, *, args: str = "{}", files: dict[str, str | bytes] | None = None) -> Make:
    """A recipe whose model comes from ``target`` (its checkpoint is a real state_dict)."""
    def make(tmp: Path) -> list[str]:
        torch.save(DigitsCNN().state_dict(), tmp / "w.pt")
        text = f"model: {{factory: '{target}', checkpoint: w.pt, args: {args}}}\ndata: {{dataset: digits}}\n"
        return recipe(text, files=files)(tmp)
    return make


def checkpoint(write: Callable[[Path], None], *, key: str = "checkpoint") -> Make:
    """``compressor run`` of a digits recipe whose ``model.KEY`` is the file ``write`` makes."""
    def make(tmp: Path) -> list[str]:
        write(tmp / "bad.pt")
        extra = ", zoo: digits_cnn" if key == "checkpoint" else ""
        return recipe(f"model: {{{key}: bad.pt{extra}}}\nreport: {{latency: 'off'}}\n", command="run")(tmp)
    return make


def onnx_file(command: str, write: Callable[[Path], None], *, extra: tuple[str, ...] = ()) -> Make:
    def make(tmp: Path) -> list[str]:
        write(tmp / "bad.onnx")
        return [command, str(tmp / "bad.onnx"), *extra]
    return make


def argv(*args: str) -> Make:
    """Plain arguments; ``{tmp}`` is replaced by the case's folder, ``{good}`` by a valid recipe."""
    def make(tmp: Path) -> list[str]:
        good = _write(tmp, "good.yaml", GOOD_MODEL + "stages:\n  - prune: {sparsity: 0.5}\n")
        return [a.replace("{tmp}", str(tmp)).replace("{good}", str(good)) for a in args]
    return make


# ----------------------------------------------------------------------------- files
def _bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def _torch(obj: object) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


def _digits_state(fill: float | None = None) -> dict[str, torch.Tensor]:
    state = DigitsCNN().state_dict()
    if fill is not None:
        first = next(iter(state))
        state[first] = state[first].clone()
        state[first].view(-1)[0] = fill
    return state


def _raw_pickle(protocol: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as f:
            pickle.dump({"weight": os.system}, f, protocol=protocol)
    return write


def _zip_not_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a checkpoint")


def _mkdir(path: Path) -> None:
    path.mkdir()


def _model(inputs: list[onnx.ValueInfoProto] | None = None, initializers: list[onnx.TensorProto] | None = None,
           op: str = "MatMul") -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])], "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers if initializers is not None else [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto) -> Callable[[Path], None]:
    return lambda path: onnx.save(model, str(path))


def _external(location: str, *, data: bytes | None = b"\0" * 64) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        model = _model()
        tensor = model.graph.initializer[0]
        set_external_data(tensor, location=location, offset=0, length=64)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        onnx.save(model, str(path))
        if data is not None:
            target = (path.parent / location).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return write


def _truncated(path: Path) -> None:
    onnx.save(_model(), str(path))
    path.write_bytes(path.read_bytes()[:40])


def _huge_input(path: Path) -> None:
    """A declared 50000 x 50000 float input: 9.3 GiB of synthetic data."""
    onnx.save(_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [50000, 50000])],
                     [numpy_helper.from_array(np.ones(1, np.float32), "w")], op="Add"), str(path))


def _no_graph(path: Path) -> None:
    path.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())


def _unknown_op(path: Path) -> None:
    onnx.save(_model(op="NoSuchOperator"), str(path))


# ----------------------------------------------------------------------------- the corpus
def _nested(depth: int) -> str:
    return "model: {zoo: digits_cnn}\nvariables: {x: " + "[" * depth + "]" * depth + "}\n"


_BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                for p, c in zip([None, "a", "b", "c", "d", "e", "f", "g"], "abcdefgh")) + GOOD_MODEL

RECIPES = [
    Case("recipe-alias-bomb", recipe(_BOMB), "alias bomb", "r.yaml", subprocess=True),
    Case("recipe-alias-bomb-inprocess", recipe(_BOMB), "expands to more than", "r.yaml"),
    Case("recipe-recursive-alias", recipe("a: &a [*a]\n" + GOOD_MODEL), "recursive", "r.yaml"),
    Case("recipe-recursive-mapping", recipe("a: &a {b: *a}\n" + GOOD_MODEL), "recursive", "r.yaml"),
    Case("recipe-nested-deep", recipe(_nested(80)), "nested more than", "r.yaml"),
    Case("recipe-nested-very-deep", recipe(_nested(5000)), "nested", "r.yaml"),
    Case("recipe-not-utf8", recipe(b"model: {zoo: digits_cnn}\nname: caf\xe9\n"), "not UTF-8", "r.yaml"),
    Case("recipe-utf16", recipe(GOOD_MODEL.encode("utf-16")), "binary file", "r.yaml"),
    Case("recipe-binary", recipe(bytes(range(256)) * 4), "binary file", "r.yaml"),
    Case("recipe-empty", recipe(""), "expected a mapping", "r.yaml"),
    Case("recipe-only-comments", recipe("# nothing here\n"), "expected a mapping", "r.yaml"),
    Case("recipe-top-level-scalar", recipe("42\n"), "expected a mapping", "r.yaml"),
    Case("recipe-too-large", recipe(GOOD_MODEL + "#" * (2 << 20) + "\n"), "too large", "r.yaml"),
    Case("recipe-missing", argv("validate", "{tmp}/nowhere.yaml"), "no such file", "nowhere.yaml"),
    Case("recipe-directory", argv("validate", "{tmp}"), "is a directory", "{tmp}"),
    Case("recipe-wrong-suffix", recipe(GOOD_MODEL, name="r.txt"), "expected a recipe file", "r.txt"),
    Case("recipe-path-looks-like-yaml", argv("validate", "model: {zoo: x}"), "no such file", "model: {zoo: x}"),
    Case("recipe-duplicate-top-key", recipe(GOOD_MODEL + "target: cpu-x86\ntarget: jetson-orin\n"),
         "duplicate key 'target' (lines 2 and 3)", "r.yaml"),
    Case("recipe-duplicate-stage-param", recipe(GOOD_MODEL + "stages:\n  - prune: {sparsity: 0.5, sparsity: 0.9}\n"),
         "duplicate key 'sparsity' (lines 3 and 3)", "r.yaml"),
    Case("recipe-duplicate-nested-key", recipe("model:\n  zoo: digits_cnn\n  zoo: resnet18\n"),
         "duplicate key 'zoo' (lines 2 and 3)", "r.yaml"),
    Case("recipe-tab-indent", recipe("model:\n\tzoo: digits_cnn\n"), "invalid YAML", "r.yaml"),
    Case("recipe-unclosed-quote", recipe("model: {zoo: 'digits_cnn}\n"), "invalid YAML", "r.yaml"),
    Case("recipe-python-tag", recipe("model: !!python/object/apply:os.system ['echo hi']\n"),
         "invalid YAML", "r.yaml"),
    Case("recipe-unhashable-key", recipe(GOOD_MODEL + "? [a, b]\n: 1\n"), "invalid YAML", "r.yaml"),
    Case("recipe-huge-integer", recipe(GOOD_MODEL + "seed: " + "9" * 5000 + "\n"), "invalid YAML value", "r.yaml"),
    Case("recipe-epochs-1e12", recipe(GOOD_MODEL + "stages:\n  - finetune: {epochs: 1000000000000}\n"),
         "less than or equal to 10000", "r.yaml"),
    Case("recipe-steps-1e12", recipe(GOOD_MODEL + "stages:\n  - finetune: {max_steps_per_epoch: 1000000000000}\n"),
         "less than or equal to", "r.yaml"),
    Case("recipe-distill-epochs-1e12", recipe(GOOD_MODEL + "stages:\n  - distill: {finetune: {epochs: 1000000000000}}\n"),
         "less than or equal to 10000", "r.yaml"),
    Case("recipe-batch-1e9", recipe(GOOD_MODEL + "data: {batch_size: 1000000000}\n"), "less than or equal to", "r.yaml"),
    Case("recipe-calibration-1e12", recipe(GOOD_MODEL + "data: {calibration_samples: 1000000000000}\n"),
         "less than or equal to", "r.yaml"),
    Case("recipe-iterations-1e12", recipe(GOOD_MODEL + "report: {iterations: 1000000000000}\n"),
         "less than or equal to", "r.yaml"),
    Case("recipe-prune-steps-1e6", recipe(GOOD_MODEL + "stages:\n  - prune: {steps: 1000000}\n"),
         "less than or equal to 1000", "r.yaml"),
    Case("recipe-parity-samples-1e12", recipe(GOOD_MODEL + "stages:\n  - export: {parity: {samples: 1000000000000}}\n"),
         "less than or equal to", "r.yaml"),
    Case("recipe-search-trials-1e12", recipe(GOOD_MODEL + "stages:\n  - finetune: {epochs: 1}\n"
                                             "search: {trials: 1000000000000, space: {finetune.lr: {value: [0.001, 0.01]}}}\n"),
         "less than or equal to 1000000", "r.yaml"),
    Case("recipe-lr-nan", recipe(GOOD_MODEL + "stages:\n  - finetune: {lr: .nan}\n"), "finite number", "r.yaml"),
    Case("recipe-lr-inf", recipe(GOOD_MODEL + "stages:\n  - finetune: {lr: .inf}\n"), "finite number", "r.yaml"),
    Case("recipe-max-drop-inf", recipe(GOOD_MODEL + "eval: {max_drop: .inf}\n"), "finite number", "r.yaml"),
    Case("recipe-seed-negative", recipe(GOOD_MODEL + "seed: -1\n"), "greater than or equal to 0", "r.yaml"),
    Case("recipe-seed-huge", recipe(GOOD_MODEL + "seed: 18446744073709551616\n"), "less than or equal to", "r.yaml"),
    Case("recipe-name-traversal", recipe("name: ../..\n" + GOOD_MODEL), "folder name", "r.yaml"),
    Case("recipe-name-absolute", recipe("name: /tmp/elsewhere\n" + GOOD_MODEL), "folder name", "r.yaml"),
    Case("recipe-name-separator", recipe("name: a/b\n" + GOOD_MODEL), "folder name", "r.yaml"),
    Case("recipe-name-dot", recipe("name: .hidden\n" + GOOD_MODEL), "folder name", "r.yaml"),
    Case("recipe-checkpoint-directory", recipe("model: {zoo: digits_cnn, checkpoint: d}\n", files={"d/x": "x"}),
         "is a directory, expected a file", "r.yaml"),
    Case("recipe-torchscript-directory", recipe("model: {torchscript: d}\n", files={"d/x": "x"}),
         "is a directory, expected a file", "r.yaml"),
    Case("recipe-huggingface-file", recipe("model: {huggingface: m.bin}\n", files={"m.bin": "x"}),
         "is a file, expected a Hugging Face model folder", "r.yaml"),
    Case("recipe-checkpoint-missing", recipe("model: {zoo: digits_cnn, checkpoint: nowhere.pt}\n"),
         "no such file", "r.yaml"),
    Case("recipe-unknown-stage", recipe(GOOD_MODEL + "stages:\n  - prnue: {}\n"), "unknown stage", "r.yaml"),
    Case("recipe-stage-param-typo", recipe(GOOD_MODEL + "stages:\n  - prune: {sparsty: 0.5}\n"),
         "did you mean 'sparsity'", "r.yaml"),
    Case("recipe-sparsity-range", recipe(GOOD_MODEL + "stages:\n  - prune: {sparsity: 1.5}\n"), "less than 1", "r.yaml"),
    Case("recipe-bad-regex-selector", recipe(GOOD_MODEL + "stages:\n  - prune: {layers: ['re:(']}\n"),
         "regular expression", "r.yaml"),
]

# A recipe's factory is user code; these modules are refused unless --trust-code (compressor.trust).
DENIED_FACTORIES = ["os:system", "subprocess:getoutput", "builtins:eval", "shutil:rmtree", "sys:exit",
                    "importlib:import_module", "pty:spawn", "socket:create_connection", "pickle:loads",
                    "marshal:loads", "ctypes:CDLL", "runpy:run_path", "code:interact", "torch:load",
                    "torch.hub:load", "numpy:load", "compressor.cli:main", "webbrowser:open",
                    "multiprocessing:Process", "tempfile:mkdtemp"]

FACTORIES = [Case(f"factory-{target.replace(':', '-')}", factory(target), "refused factory", "r.yaml")
             for target in DENIED_FACTORIES] + [
    Case("factory-reexported-os-system", factory("reexport_mod:build", files={"reexport_mod.py": "from os import system as build\n"}),
         "refused factory", "r.yaml"),
    Case("factory-trust-remote-code-arg",
         factory("trc_mod:build", args="{trust_remote_code: true}",
                 files={"trc_mod.py": "def build(trust_remote_code=False):\n    pass\n"}), "trust_remote_code", "r.yaml"),
    Case("factory-module-missing", factory("no_such_module_here:build"), "cannot import 'no_such_module_here'", "r.yaml"),
    Case("factory-module-raises", factory("raising_mod:build", files={"raising_mod.py": "raise RuntimeError('boom')\n"}),
         "raised RuntimeError: boom", "r.yaml"),
    Case("factory-module-syntax-error", factory("syntax_mod:build", files={"syntax_mod.py": "def build(:\n"}),
         "SyntaxError", "r.yaml"),
    Case("factory-missing-attribute", factory("attr_mod:build", files={"attr_mod.py": "def other():\n    pass\n"}),
         "has no 'build'", "r.yaml"),
    Case("factory-not-callable", factory("const_mod:build", files={"const_mod.py": "build = 3\n"}),
         "not a callable", "r.yaml"),
    Case("factory-wrong-args", factory("args_mod:build", args="{depth: 3}",
                                       files={"args_mod.py": "def build(width=4):\n    pass\n"}),
         "wrong arguments", "r.yaml"),
    Case("zoo-wrong-args", recipe("model: {zoo: digits_cnn, args: {depth: 3}}\n"), "wrong arguments", "r.yaml"),
    Case("factory-distill-teacher-os-system",
         recipe(GOOD_MODEL + "stages:\n  - distill: {teacher: {factory: 'os:system', checkpoint: w.pt}}\n",
                files={"w.pt": b"x"}), "refused factory", "r.yaml"),
]

CHECKPOINTS = [
    Case("checkpoint-text-file", checkpoint(_bytes(b"hello\nworld\n")), "corrupt or not a PyTorch checkpoint", "bad.pt"),
    Case("checkpoint-empty", checkpoint(_bytes(b"")), "empty file", "bad.pt"),
    Case("checkpoint-random-bytes", checkpoint(_bytes(bytes(range(256)) * 8)), "corrupt or not a PyTorch checkpoint", "bad.pt"),
    Case("checkpoint-zip-not-torch", checkpoint(_zip_not_torch), "corrupt or not a PyTorch checkpoint", "bad.pt"),
    Case("checkpoint-unsafe-global", checkpoint(_torch({"state_dict": {}, "hook": os.system})),
         "refused: unsafe pickle (use unsafe_pickle: true only for files you trust)", "bad.pt"),
    Case("checkpoint-raw-pickle-protocol-2", checkpoint(_raw_pickle(2)), "refused: unsafe pickle", "bad.pt"),
    Case("checkpoint-raw-pickle-protocol-5", checkpoint(_raw_pickle(5)), "refused: unsafe pickle", "bad.pt"),
    Case("checkpoint-a-tensor", checkpoint(_torch(torch.zeros(3))), "expected a state_dict", "bad.pt"),
    Case("checkpoint-non-tensor-value", checkpoint(_torch({"conv.weight": "text"})), "holds a str", "bad.pt"),
    Case("checkpoint-nan-weights", checkpoint(_torch(_digits_state(float("nan")))), "holds NaN", "bad.pt"),
    Case("checkpoint-inf-weights", checkpoint(_torch(_digits_state(float("inf")))), "holds infinity", "bad.pt"),
    Case("checkpoint-wrong-shapes", checkpoint(_torch(DigitsCNN(width=8).state_dict())), "shape mismatch", "bad.pt"),
    Case("checkpoint-missing-keys", checkpoint(_torch({"other.weight": torch.zeros(2)})), "missing key", "bad.pt"),
    Case("torchscript-junk", checkpoint(_bytes(b"junk" * 10), key="torchscript"), "not a TorchScript file", "bad.pt"),
    Case("torchscript-empty", checkpoint(_bytes(b""), key="torchscript"), "not a TorchScript file", "bad.pt"),
]

ONNX = []
for _cmd in ("bench", "check-trt"):
    ONNX += [
        Case(f"{_cmd}-empty", onnx_file(_cmd, _bytes(b"")), "empty file", "bad.onnx"),
        Case(f"{_cmd}-junk", onnx_file(_cmd, _bytes(b"\x08\x07junk\xff\xff")), "not an ONNX model", "bad.onnx"),
        Case(f"{_cmd}-text", onnx_file(_cmd, _bytes(b"hello world\n" * 10)), "not an ONNX model", "bad.onnx"),
        Case(f"{_cmd}-truncated", onnx_file(_cmd, _truncated), "not an ONNX model", "bad.onnx"),
        Case(f"{_cmd}-no-graph", onnx_file(_cmd, _no_graph), "not an ONNX model", "bad.onnx"),
        Case(f"{_cmd}-directory", onnx_file(_cmd, _mkdir), "is a directory", "bad.onnx"),
        Case(f"{_cmd}-missing", argv(_cmd, "{tmp}/nowhere.onnx"), "no such file", "nowhere.onnx"),
        Case(f"{_cmd}-external-escape", onnx_file(_cmd, _external("../outside.bin")), "outside the model's folder", "bad.onnx"),
        Case(f"{_cmd}-external-absolute", onnx_file(_cmd, _external("/etc/hostname", data=None)),
             "outside the model's folder", "bad.onnx"),
        Case(f"{_cmd}-external-missing", onnx_file(_cmd, _external("gone.bin", data=None)), "is missing", "bad.onnx"),
        Case(f"{_cmd}-external-short", onnx_file(_cmd, _external("short.bin", data=b"\0" * 8)), "is shorter", "bad.onnx"),
    ]
ONNX += [
    Case("bench-huge-input", onnx_file("bench", _huge_input), "over the 1024 MiB budget", "bad.onnx", subprocess=True),
    Case("bench-huge-input-inprocess", onnx_file("bench", _huge_input), "synthetic inputs would take", "bad.onnx"),
    Case("bench-huge-dim", onnx_file("bench", _save(_model()), extra=("--dim", "batch=100000000000")),
         "budget", "bad.onnx"),
    Case("bench-unknown-op", onnx_file("bench", _unknown_op), "ONNX Runtime cannot run it", "bad.onnx"),
]

ARGUMENTS = [
    Case("set-stage-without-param", argv("validate", "{good}", "--set", "prune=3"), "'prune' is a stage", "good.yaml"),
    Case("set-unknown-key", argv("validate", "{good}", "--set", "prnue.sparsity=3"), "unknown key 'prnue'", "good.yaml"),
    Case("set-no-equals", argv("validate", "{good}", "--set", "prune.sparsity"), "expected KEY.PATH=VALUE", "good.yaml"),
    Case("set-bad-yaml-value", argv("validate", "{good}", "--set", "prune.sparsity=[0.5"), "not a YAML scalar", "good.yaml"),
    Case("set-out-of-range", argv("validate", "{good}", "--set", "prune.sparsity=3"), "less than 1", "good.yaml"),
    Case("set-into-scalar", argv("validate", "{good}", "--set", "prune.sparsity.x=1"), "is not a mapping", "good.yaml"),
    Case("set-name-traversal", argv("validate", "{good}", "--set", "name=../../etc"), "folder name", "good.yaml"),
    Case("run-no-recipe", argv("run"), "give a recipe file", "--resume"),
    Case("run-resume-foreign", argv("run", "--resume", "{tmp}"), "not a run directory", "run.json"),
    Case("run-resume-with-recipe", argv("run", "{good}", "--resume", "{tmp}"), "drop the recipe argument", "--resume"),
    Case("run-overwrite-foreign-dir", argv("run", "{good}", "--out", "{tmp}", "--overwrite"),
         "not a compressor run directory", "{tmp}"),
    Case("run-out-is-a-file", argv("run", "{good}", "--out", "{good}"), "not a directory", "good.yaml"),
    Case("export-foreign-dir", argv("export", "{tmp}"), "not a run directory", "run.json"),
    Case("export-unknown-source", argv("export", "{tmp}/nothing-here"), "no such run directory", "nothing-here"),
    Case("bench-batch-zero", argv("bench", "x.onnx", "--batch", "0"), "expected 1..", "--batch"),
    Case("bench-batch-text", argv("bench", "x.onnx", "--batch", "many"), "expected an integer", "--batch"),
    Case("bench-iterations-huge", argv("bench", "x.onnx", "--iterations", "1000000000000"), "expected 1..", "--iterations"),
    Case("bench-threads-negative", argv("bench", "x.onnx", "--threads", "-1"), "expected 1..", "--threads"),
    Case("bench-dim-no-size", argv("bench", "x.onnx", "--dim", "seq"), "expected NAME=SIZE", "--dim"),
    Case("bench-dim-zero", argv("bench", "x.onnx", "--dim", "seq=0"), "expected NAME=SIZE", "--dim"),
    Case("bench-budget-zero", argv("bench", "x.onnx", "--max-input-mb", "0"), "expected 1..", "--max-input-mb"),
    Case("search-workers-zero", argv("search", "{good}", "--workers", "0"), "expected 1..", "--workers"),
    Case("search-trials-huge", argv("search", "{good}", "--trials", "1000000000000"), "expected 1..", "--trials"),
    Case("sensitivity-samples-zero", argv("sensitivity", "{good}", "--samples", "0"), "expected 1..", "--samples"),
]

CORPUS: list[Case] = RECIPES + FACTORIES + CHECKPOINTS + ONNX + ARGUMENTS
