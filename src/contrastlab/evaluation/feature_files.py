r"""Features files: ``.npz``, ``.safetensors`` and ``.parquet`` files of features computed anywhere, read and checked.

What each key means is in :mod:`contrastlab.evaluation.analyze`, which analyses them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastlab.errors import UserError, did_you_mean

#: The keys a features file may hold besides the prefixed ones (``factor_``, ``test_factor_``, ``baseline_``,
#: ``test_baseline_``).
KEYS: tuple[str, ...] = ("x", "y", "x_test", "y_test", "x2", "x2_test", "paired", "paired_test", "images",
                         "test_images", "class_names")
PREFIXES: tuple[str, ...] = ("factor_", "test_factor_", "baseline_", "test_baseline_")
#: The features file formats :func:`load_features` reads.
FORMATS: tuple[str, ...] = (".npz", ".safetensors", ".parquet")


def as_array(value, name: str) -> np.ndarray:
    """``value`` (numpy, torch or a list) as a numpy array; ``name`` goes into the error."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} is not an array ({err})") from None


def feature_matrix(value, name: str) -> Tensor:
    """``value`` as finite float32 features ``(N, D)``, or a ``ValueError`` naming ``name`` and the first bad row.

    Example:
        >>> tuple(feature_matrix([[1, 2], [3, 4]], "x").shape)
        (2, 2)
    """
    a = as_array(value, name)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be features of shape (N, D); got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers; got dtype {a.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(t).all():
        row = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} has a NaN or infinite value (row {row})")
    return t


def _check_keys(arrays: Mapping[str, Any], source: str) -> None:
    for key in arrays:
        if key not in KEYS and not any(key.startswith(p) and len(key) > len(p) for p in PREFIXES):
            raise UserError(f"{source}: unknown key {key!r}{did_you_mean(key, KEYS)}; a features file holds "
                            f"{', '.join(KEYS)} and {', '.join(p + '<name>' for p in PREFIXES)}")
    if "x" not in arrays:
        raise UserError(f"{source}: no features under the key 'x' (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    for key in ("x_test", "x2_test", "paired_test", "test_images"):
        if key in arrays and "x_test" not in arrays:
            raise UserError(f"{source}: {key} needs x_test")


def load_features(path: str | Path) -> dict[str, Any]:
    """Read a features file: ``.npz``, ``.safetensors`` or ``.parquet`` (the keys are described in
    :mod:`contrastlab.evaluation.analyze`; unknown ones are refused with a did-you-mean).

    A ``.parquet`` file holds one row per item: a list column ``x`` (and ``x2``, ``paired``), a label column
    ``y``, ``factor_<name>`` columns, and optionally a ``split`` column of ``"train"``/``"test"`` that takes
    the place of the ``_test`` keys.

    Args:
        path: the file.

    Returns:
        Key -> numpy array (``class_names`` a list of strings).

    Raises:
        UserError: a missing or unreadable file, an unknown format or key, or no ``x``.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "f.npz"
        >>> np.savez(f, x=np.zeros((4, 2)), y=np.arange(4) % 2)
        >>> sorted(load_features(f))
        ['x', 'y']
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{path}: features must be a {', '.join(FORMATS)} file; got {suffix or 'no extension'}")
    try:
        if suffix == ".npz":
            arrays = _read_npz(path)
        elif suffix == ".safetensors":
            arrays = _read_safetensors(path)
        else:
            arrays = _read_parquet(path)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as err:
        from contrastlab.errors import one_line

        raise UserError(f"{path} is not a readable {suffix[1:]} file ({one_line(err) or type(err).__name__})") from None
    _check_keys(arrays, str(path))
    return arrays


def _read_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        if not hasattr(data, "files"):
            raise UserError(f"{path} holds one array, not the named arrays of an .npz file")
        return {k: data[k] for k in data.files}


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    if "class_names" in meta:
        try:
            names = json.loads(meta["class_names"])
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
            names = None
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise UserError(f"{path}: metadata 'class_names' must be a JSON list of strings")
        arrays["class_names"] = names
    return arrays


def _read_parquet(path: Path) -> dict[str, Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading parquet needs pyarrow (pip install 'contrastlab[hf]' or pyarrow)") from None
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    split = columns.pop("split", None)
    arrays = {}
    for name, values in columns.items():
        arrays[name] = np.asarray(values) if name in ("y", "class_names") or name.startswith(("factor_", "test_factor_")) \
            else np.asarray(values, dtype=np.float64 if name != "images" else None)
    if split is None:
        return arrays
    split = np.asarray(split).astype(str)
    bad = sorted(set(split.tolist()) - {"train", "test"})
    if bad:
        raise UserError(f"{path}: column 'split' must hold 'train' or 'test'; got {bad[0]!r}")
    out = {}
    for name, a in arrays.items():
        test_name = {"x": "x_test", "y": "y_test", "x2": "x2_test", "paired": "paired_test",
                     "images": "test_images"}.get(name, f"test_{name}")
        out[name], out[test_name] = a[split == "train"], a[split == "test"]
    return out
