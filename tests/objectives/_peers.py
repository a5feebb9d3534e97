"""The peer implementations the objective tests compare against, loaded without their unusable dependencies.

* lightly (installed with ``--no-deps``): ``lightly.loss`` imports torchvision for losses unrelated to ours,
  and torchvision is not usable here. The torchvision modules it names are stubbed in ``sys.modules`` while
  it imports (calling anything in a stub raises) and removed right after, so no other code sees them
  (``transformers``, for one, probes for torchvision and breaks on a stub).
* open_clip: the package's ``__init__`` builds the whole model zoo (torchvision, transformers); its loss
  module needs only torch, so the installed ``open_clip/loss.py`` is loaded on its own.

Each accessor returns the peer, or skips the calling test with the reason when the peer is not installed or
does not import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # ``benchmarks`` is a top-level package of the repository, not of contrastlab
    sys.path.insert(0, str(_ROOT))

from benchmarks._peers import _stub_module  # noqa: E402 - one torchvision stub for the benchmark and the tests


@functools.cache
def _lightly_module(dotted: str = "lightly.loss") -> types.ModuleType | str:
    """A module of lightly (``lightly.loss``, ``lightly.models.utils``, ...), or why it does not import."""
    stubbed: list[str] = []
    try:
        for _ in range(10):
            try:
                return importlib.import_module(dotted)
            except ModuleNotFoundError as err:
                if not err.name or err.name.split(".")[0] != "torchvision" or err.name in sys.modules:
                    return f"lightly does not import: {err}"
                parts = err.name.split(".")
                for name in (".".join(parts[: i + 1]) for i in range(len(parts))):
                    if name not in sys.modules:
                        sys.modules[name] = _stub_module(name)
                        stubbed.append(name)
                for name in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")]:
                    del sys.modules[name]  # half-imported: import again with the new stubs
        return "lightly does not import: too many missing torchvision modules"
    except Exception as err:  # noqa: BLE001 - any failure means "no peer to compare with", given as the reason
        return f"lightly does not import: {type(err).__name__}: {err}"
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)


@functools.cache
def _open_clip_loss() -> types.ModuleType | str:
    """The installed ``open_clip/loss.py`` as a module of its own, or why it does not load."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return "open_clip is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "loss.py"
    loss_spec = importlib.util.spec_from_file_location("_peer_open_clip_loss", path)
    module = importlib.util.module_from_spec(loss_spec)
    try:
        loss_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        return f"{path} does not load: {type(err).__name__}: {err}"
    return module


def lightly(name: str, module: str = "lightly.loss"):
    """The attribute ``name`` of a lightly module (default ``lightly.loss``, e.g. ``"BarlowTwinsLoss"``);
    skips the test if unavailable."""
    module = _lightly_module(module)
    if isinstance(module, str):
        pytest.skip(module)
    return getattr(module, name)


def open_clip(name: str):
    """The class ``name`` of open_clip's ``loss`` module (e.g. ``"SigLipLoss"``); skips the test if unavailable."""
    module = _open_clip_loss()
    if isinstance(module, str):
        pytest.skip(module)
    return getattr(module, name)
