"""A wheel built from the repository works on its own: every package, every command.

The wheel goes into a fresh venv with no editable link to this checkout; the venv borrows the
installed dependencies (torch, onnx, ...) through a plain path entry, which does not activate the
editable finder that lives beside them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(ROOT), "-w", str(tmp / "dist")], check=True, capture_output=True)
    [wheel] = (tmp / "dist").glob("compressor-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    return env_dir


def run(env_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(env_dir / "bin" / "compressor"), *args], cwd=env_dir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_holds_the_package_not_a_link(installed: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import compressor.export, compressor.zoo, compressor.commands.run as m; "
                            "print(compressor.export.__file__); print(m.__file__)"],
                           cwd=installed, capture_output=True, text=True, check=True).stdout.split()
    assert all(str(installed) in path for path in where), where


def test_the_installed_command_has_its_subcommands(installed: Path) -> None:
    usage = run(installed, "--help")
    for command in ("run", "search", "export", "check-trt", "bench", "validate", "targets"):
        assert command in usage
    assert "cpu-x86" in run(installed, "targets")
    assert "ok" in run(installed, "validate", str(ROOT / "recipes" / "quickstart.yaml")).lower()


def test_the_wheel_ships_the_held_out_sentences(installed: Path) -> None:
    count = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "from compressor.zoo.sentences import EVERYDAY_FILE, everyday_sentences; "
                            "print(EVERYDAY_FILE); print(len(everyday_sentences()))"],
                           cwd=installed, capture_output=True, text=True, check=True).stdout.split()
    assert str(installed) in count[0] and int(count[1]) > 300
