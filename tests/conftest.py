"""Shared fixtures: an isolated zoo cache per session and small recipes."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from compressor.zoo import build_model
from compressor.zoo.minilm import SentenceEmbedder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _quiet_env() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def digits_recipe() -> dict:
    """A quick digits_cnn recipe (one short fine-tune, then export)."""
    return {
        "name": "test",
        "model": {"zoo": "digits_cnn"},
        "data": {"batch_size": 128},
        "report": {"latency": "final", "iterations": 5, "warmup": 1},
        "stages": [
            {"finetune": {"epochs": 1, "lr": 1e-4, "max_steps_per_epoch": 4}},
            {"export": {"simplify": False}},
        ],
    }


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    """The packaged all-MiniLM-L6-v2, built with every network connection refused."""
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("minilm tried to reach the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        return build_model("minilm")
