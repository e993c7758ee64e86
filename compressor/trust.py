"""The trust model: which code a recipe or a checkpoint may make compressor import and call.

* A recipe is code its user chose to run: ``model.factory: "pkg.mod:build"`` is imported and
  called, the way Python imports a script's modules (the recipe's folder, then the working
  directory, then the installed packages). ``compressor validate`` says which factories a recipe
  imports.
* A checkpoint is data: it never makes compressor import or call anything its caller did not
  name. Its model is rebuilt from the zoo or a Hugging Face folder (loaded without remote code);
  a factory or TorchScript file named inside it is used only when the caller names the factory
  or passes ``trust_code=True`` (see :func:`compressor.checkpoint.restore`).
* Some modules are refused as factories even in a recipe, unless the caller passes
  ``--trust-code`` (CLI) or ``trust_code=True`` (API): :data:`DENIED` lists them by family. None
  of them builds a model (a factory must return a ``torch.nn.Module``), and each can run a
  process, load code, touch files or the network with nothing but the keyword arguments a recipe
  can write. The list guards against the obvious mistakes and attacks; it is not a sandbox: a
  recipe from someone you do not trust is a program you have not read.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from compressor.errors import ModelLoadError, UntrustedCodeError

#: Modules (and their submodules) a factory may not come from without trust, by family.
DENIED: dict[str, tuple[str, ...]] = {
    "interpreter and code loading": (
        "builtins", "__builtin__", "sys", "importlib", "imp", "runpy", "code", "codeop", "pdb", "bdb",
        "timeit", "trace", "profile", "cProfile", "doctest", "ctypes", "_ctypes", "cffi", "site",
        "pkgutil", "zipimport", "compileall", "py_compile", "pip", "ensurepip", "venv", "setuptools",
        "distutils"),
    "processes and the operating system": (
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "pty", "tty",
        "termios", "pwd", "grp", "resource", "signal", "multiprocessing", "concurrent", "threading",
        "_thread", "asyncio", "platform", "webbrowser", "antigravity", "sched"),
    "files": (
        "io", "_io", "shutil", "tempfile", "pathlib", "glob", "fileinput", "mmap", "fcntl", "tarfile",
        "zipfile", "gzip", "bz2", "lzma", "sqlite3", "dbm", "shelve", "logging", "filecmp",
        "linecache", "codecs", "wave", "aifc", "sunau", "mailbox"),
    "network": (
        "socket", "ssl", "select", "selectors", "http", "urllib", "ftplib", "smtplib", "poplib",
        "imaplib", "nntplib", "telnetlib", "xmlrpc", "socketserver", "requests", "urllib3", "httpx",
        "aiohttp"),
    "deserialisers that run code": (
        "pickle", "_pickle", "marshal", "copyreg", "dill", "cloudpickle", "joblib", "jsonpickle",
        "yaml", "numpy", "pandas", "torch.serialization", "torch.hub", "torch.jit", "torch.package",
        "torch.utils.cpp_extension", "torch.library", "torch.ops", "torch._ops", "torch._C"),
    # compressor.cli:main would run any command (with --trust-code); the zoo's builders are fine.
    "compressor itself (other than compressor.zoo)": ("compressor",),
}
ALLOWED_INSIDE_DENIED = ("compressor.zoo",)
#: Factory keyword arguments that switch a library's own guard off (loading remote code, pickles).
UNSAFE_ARGS: dict[str, bool] = {"trust_remote_code": True, "allow_pickle": True, "weights_only": False}

TRUST_HINT = ("pass --trust-code (CLI) or trust_code=True (API) only if you wrote this recipe and "
              "mean it")


def denied_family(module: str) -> str | None:
    """The family of :data:`DENIED` that ``module`` belongs to, or None."""
    if _within(module, ALLOWED_INSIDE_DENIED):
        return None
    for family, modules in DENIED.items():
        if _within(module, modules):
            return family
    return None


def check_factory(factory: str, args: Mapping[str, Any], *, trust_code: bool) -> None:
    """Refuse, before anything is imported, a factory from :data:`DENIED` or unsafe arguments."""
    if trust_code:
        return
    module = factory.partition(":")[0]
    family = denied_family(module)
    if family is not None:
        raise UntrustedCodeError(f"refused factory {factory!r}: module {module!r} belongs to the "
                                 f"{family} family, which builds no model; {TRUST_HINT}")
    for key, unsafe in UNSAFE_ARGS.items():
        if key in args and bool(args[key]) == unsafe:
            raise UntrustedCodeError(f"refused factory {factory!r}: args.{key}: {args[key]!r} lets the "
                                     f"library load code from files; {TRUST_HINT}")


def import_factory(factory: str, args: Mapping[str, Any] | None = None, *,
                   search_path: Sequence[Path] = (), trust_code: bool = False) -> Callable[..., Any]:
    """The callable named ``"pkg.mod:name"``, imported from ``search_path``, the working directory
    or the installed packages (in that order), after :func:`check_factory`.

    The callable's defining module is checked too, so a user module re-exporting ``os.system``
    is refused like ``os:system``.
    """
    check_factory(factory, args or {}, trust_code=trust_code)
    module_name, _, attr = factory.partition(":")
    with importable_from(search_path):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0]:
                where = ", ".join(dict.fromkeys(str(p) for p in [*search_path, Path.cwd()]))
                raise ModelLoadError(f"cannot import {module_name!r}: no such module in {where} "
                                     "or the installed packages") from None
            raise ModelLoadError(f"importing {module_name!r} failed: {exc}") from exc
        except Exception as exc:  # the module's own code: SyntaxError, ImportError, anything
            raise ModelLoadError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise ModelLoadError(f"module {module_name!r} ({getattr(module, '__file__', None) or 'built in'}) "
                             f"has no {attr!r}")
    if not callable(fn):
        raise ModelLoadError(f"{factory!r} is a {type(fn).__name__}, not a callable that builds a model")
    defined_in = getattr(fn, "__module__", None)
    if not trust_code and isinstance(defined_in, str) and denied_family(defined_in) is not None:
        raise UntrustedCodeError(f"refused factory {factory!r}: it is {defined_in}.{attr}, from the "
                                 f"{denied_family(defined_in)} family, which builds no model; {TRUST_HINT}")
    return fn


def check_arguments(fn: Callable[..., Any], args: Mapping[str, Any], what: str, *positional: Any) -> None:
    """Refuse keyword arguments that ``fn`` does not take, before it is called."""
    try:
        inspect.signature(fn).bind(*positional, **args)
    except TypeError as exc:
        raise ModelLoadError(f"{what}: wrong arguments {dict(args)!r} ({exc})") from None
    except ValueError:  # no signature to check (some builtins): the call itself will tell
        pass


@contextmanager
def importable_from(folders: Sequence[Path]) -> Iterator[None]:
    """Put ``folders`` and the working directory first on ``sys.path`` (as ``python -m`` puts the
    working directory there), and take them off again afterwards."""
    added = [str(Path(p)) for p in folders] + [os.getcwd()]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:  # only ours: the imported code may have changed sys.path too
            if entry in sys.path:
                sys.path.remove(entry)


def _within(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)
