"""An arm64 Debian tree run with qemu-user: built once, given aarch64 wheels, runs Python in it.

No binfmt_misc, chroot or network inside the emulator is needed: ``mmdebstrap --variant=extract``
unpacks python3 (and libstdc++, which numpy and onnxruntime link against) without running a
maintainer script, the host's pip fetches and unpacks the aarch64 wheels into ``opt/site`` inside
the tree, and ``qemu-aarch64 -L TREE TREE/usr/bin/python3`` runs it with that directory on
``PYTHONPATH``. Everything lives in ``<compressor cache>/arm64/`` (never in the repository).

qemu-user hands the guest the host's x86 ``/proc/cpuinfo``; ONNX Runtime's cpuinfo library finds
no ARM processor in it and crashes on import. qemu opens a file under ``-L`` in place of the
host's when one exists, so the tree gets a ``proc/cpuinfo`` naming the emulated core (its MIDR);
the instruction-set features ONNX Runtime acts on come from the auxiliary vector qemu writes for
that core (``AT_HWCAP``), not from this file.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from compressor.cache import cache_dir

SUITE = "bookworm"
#: What the tree holds: the interpreter and the C++ runtime the wheels' extensions link against.
PACKAGES = ("python3", "libstdc++6")
#: Wheels installed into the tree, pinned to the host's versions so both sides run the same code.
DISTRIBUTIONS = ("onnxruntime", "numpy")
#: manylinux_2_17 is the oldest perennial tag (= manylinux2014).
OLDEST_GLIBC_MINOR = 17
#: MIDR fields of the cores qemu emulates that ``proc/cpuinfo`` can name:
#: (implementer, variant, part, revision), as in qemu's target/arm/cpu64.c.
CORES = {
    "neoverse-n1": (0x41, 0x4, 0xD0C, 1),  # AWS Graviton2; ARMv8.2 with dot product (SDOT/UDOT)
    "cortex-a76": (0x41, 0x4, 0xD0B, 1),   # Raspberry Pi 5; same int8 features as neoverse-n1
    "cortex-a72": (0x41, 0x0, 0xD08, 3),   # Raspberry Pi 4; ARMv8.0, no dot product
    "cortex-a53": (0x41, 0x0, 0xD03, 4),   # Raspberry Pi 3; ARMv8.0, no dot product
}
INSTALL_HINT = "apt-get install mmdebstrap qemu-user-static"


class EmulatorUnavailable(RuntimeError):
    """A tool the emulated tree needs is missing or failed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Tree:
    """A built arm64 tree and how to run its Python under qemu."""

    root: Path
    qemu: str
    core: str = "neoverse-n1"

    @property
    def python(self) -> str:
        return python_version(self.root)

    @property
    def site(self) -> Path:
        return self.root / "opt" / "site"

    def command(self, *args: str) -> list[str]:
        """The command line running ``python3 args...`` in the tree (no user site-packages)."""
        return [self.qemu, "-cpu", self.core, "-L", str(self.root), str(self.root / "usr" / "bin" / "python3"),
                "-s", *args]

    def env(self) -> dict[str, str]:
        """A clean environment: the tree's Python must not see the host's packages."""
        return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8",
                "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1"}

    def run(self, *args: str, cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env(), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)


def find_qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if path := shutil.which(name):
            return path
    raise EmulatorUnavailable(f"no qemu-aarch64 or qemu-aarch64-static on PATH ({INSTALL_HINT})")


def build_tree(root: Path | None = None, *, suite: str = SUITE, core: str = "neoverse-n1") -> Tree:
    """The arm64 tree at ``root`` (default ``<cache>/arm64/<suite>``), built with mmdebstrap if absent."""
    if core not in CORES:
        raise EmulatorUnavailable(f"--cpu {core!r}: proc/cpuinfo knows {', '.join(CORES)}")
    qemu = find_qemu()
    root = root or cache_dir() / "arm64" / suite
    if not (root / "usr" / "bin" / "python3").exists():
        _mmdebstrap(root, suite)
    write_cpuinfo(root, core, possible_cpus())
    return Tree(root, qemu, core)


def _mmdebstrap(root: Path, suite: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise EmulatorUnavailable(f"mmdebstrap is not installed ({INSTALL_HINT})")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted build of ours
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = ["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
               f"--include={','.join(PACKAGES)}", suite, str(partial)]
    print(f"building the arm64 tree: {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmulatorUnavailable(f"mmdebstrap failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    os.replace(partial, root)


def possible_cpus(text: str | None = None) -> list[int]:
    """CPU numbers in a kernel CPU list such as ``0-3,6`` (default: this machine's possible CPUs)."""
    if text is None:
        text = Path("/sys/devices/system/cpu/possible").read_text()
    cpus: list[int] = []
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def cpuinfo(core: str, cpus: list[int]) -> str:
    """An arm64 ``/proc/cpuinfo`` naming ``core`` on each of ``cpus`` (the fields cpuinfo parses)."""
    implementer, variant, part, revision = CORES[core]
    return "".join(f"processor\t: {n}\nCPU implementer\t: {implementer:#x}\nCPU architecture: 8\n"
                   f"CPU variant\t: {variant:#x}\nCPU part\t: {part:#x}\nCPU revision\t: {revision}\n\n"
                   for n in cpus)


def write_cpuinfo(root: Path, core: str, cpus: list[int]) -> None:
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo(core, cpus))


def python_version(root: Path) -> str:
    """``"3.11"`` for a tree whose ``usr/bin/python3`` links to ``python3.11``."""
    target = os.readlink(root / "usr" / "bin" / "python3")
    match = re.fullmatch(r"python(3\.\d+)", Path(target).name)
    if match is None:
        raise EmulatorUnavailable(f"{root}/usr/bin/python3 -> {target}: expected python3.N")
    return match.group(1)


def glibc_version(root: Path) -> tuple[int, int]:
    """The tree's glibc (major, minor), read from the version banner inside libc.so.6."""
    libc = root / "lib" / "aarch64-linux-gnu" / "libc.so.6"
    match = re.search(rb"release version (\d+)\.(\d+)", libc.read_bytes())
    if match is None:
        raise EmulatorUnavailable(f"{libc}: no glibc version banner")
    return int(match.group(1)), int(match.group(2))


def platform_tags(glibc: tuple[int, int]) -> list[str]:
    """Every manylinux tag a glibc ``glibc`` aarch64 system runs, newest first.

    pip's ``--platform`` matches tags literally (``manylinux_2_36_aarch64`` does not accept a
    ``manylinux_2_28`` wheel), so the older ones are spelled out.
    """
    major, minor = glibc
    if major != 2 or minor < OLDEST_GLIBC_MINOR:
        raise EmulatorUnavailable(f"glibc {major}.{minor}: manylinux wheels need glibc 2.{OLDEST_GLIBC_MINOR} or newer")
    return [f"manylinux_2_{m}_aarch64" for m in range(minor, OLDEST_GLIBC_MINOR - 1, -1)] + ["manylinux2014_aarch64"]


def requirements() -> list[str]:
    """The host's onnxruntime and numpy, pinned."""
    return [f"{name}=={version(name)}" for name in DISTRIBUTIONS]


def pip_command(action: str, python: str, glibc: tuple[int, int], reqs: list[str], *, wheels: Path,
                target: Path | None = None) -> list[str]:
    """``pip download`` (into ``wheels``) or ``pip install --target`` (from ``wheels`` only) for the tree."""
    platform = [arg for tag in platform_tags(glibc) for arg in ("--platform", tag)]
    abi = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", action, "--quiet", "--only-binary=:all:", "--no-deps", *platform,
               "--python-version", python, "--implementation", "cp", "--abi", abi]
    if action == "download":
        return [*command, "--dest", str(wheels), *reqs]
    return [*command, "--no-index", "--find-links", str(wheels), "--target", str(target), *reqs]


def install_wheels(tree: Tree, reqs: list[str] | None = None) -> Path:
    """Download (once) and unpack the aarch64 wheels of ``reqs`` into the tree's ``opt/site``."""
    reqs = reqs or requirements()
    stamp = tree.site / "requirements.txt"
    if stamp.is_file() and stamp.read_text().split() == reqs:
        return tree.site
    wheels = tree.root.parent / "wheels"
    python, glibc = tree.python, glibc_version(tree.root)
    missing = [r for r in reqs if not list(wheels.glob(r.replace("==", "-") + "-*aarch64*.whl"))]
    if missing:
        _pip(pip_command("download", python, glibc, missing, wheels=wheels))
    partial = tree.site.with_name("site.partial")
    shutil.rmtree(partial, ignore_errors=True)
    _pip(pip_command("install", python, glibc, reqs, wheels=wheels, target=partial))
    (partial / "requirements.txt").write_text("\n".join(reqs) + "\n")
    shutil.rmtree(tree.site, ignore_errors=True)  # an older install of ours
    os.replace(partial, tree.site)
    return tree.site


def _pip(command: list[str]) -> None:
    print(" ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmulatorUnavailable(f"pip failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
