r"""What ``contrastlab data check`` reads and reports: :func:`check_source` and :func:`render`.

:func:`check_source` reads every item of an image folder, a manifest, a pack of shards, or an ``.npz`` /
``.npy`` file, as a data set would, and reports what it found: counts, classes, image sizes, modes and
bit depths, and each unreadable item by name (the first ``max_listed``; all are counted). :func:`render`
gives the report as the lines the command prints; the command line (:mod:`contrastlab.data.commands`)
only parses, calls, prints and sets the exit status.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

from contrastlab.errors import UserError, one_line
from contrastlab.progress import item_bar

MAX_LISTED = 20  #: unreadable items named by default (all are counted)
_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


class _Report:
    """What a check found: counts, classes, image sizes, modes, bit depths, and the unreadable items."""

    def __init__(self, source: Path, kind: str, max_listed: int) -> None:
        self.source, self.kind, self.max_listed = source, kind, max_listed
        self.items = 0
        self.classes: Counter = Counter()
        self.splits: Counter = Counter()
        self.sizes: Counter = Counter()
        self.modes: Counter = Counter()
        self.depths: Counter = Counter()
        self.formats: Counter = Counter()
        self.captions = 0
        self.unreadable: list[dict[str, str]] = []
        self.problems = 0
        self.notes: list[str] = []
        self.arrays: list[dict] = []

    def problem(self, item: str, error: str) -> None:
        self.problems += 1
        if len(self.unreadable) < self.max_listed:
            self.unreadable.append({"item": item, "error": error})

    def image(self, source: Path | bytes, name: str, where: str = "") -> bool:
        """Read one image as a data set would; count its size, mode and depth, or record why it cannot be read."""
        from PIL import Image

        from contrastlab.data._images import decode_image

        try:
            data = source.read_bytes() if isinstance(source, Path) else source
            with Image.open(io.BytesIO(data)) as img:
                size, mode, fmt = f"{img.width}x{img.height}", img.mode, img.format or "?"
            decode_image(data, where=where, name=name)
        except UserError as err:
            self.problem(name, one_line(err))
            return False
        except Exception as err:  # noqa: BLE001 - anything Pillow raises on a bad header: report it, go on
            self.problem(name, f"cannot read image: {one_line(err)}")
            return False
        self.sizes[size] += 1
        self.modes[mode] += 1
        self.depths[_BITS.get(mode, 8)] += 1
        self.formats[fmt] += 1
        return True

    def as_dict(self) -> dict:
        top = lambda c: dict(c.most_common())  # noqa: E731
        return {"source": str(self.source), "kind": self.kind, "items": self.items, "problems": self.problems,
                "classes": dict(self.classes), "splits": dict(self.splits), "image_sizes": top(self.sizes),
                "modes": top(self.modes), "bit_depths": {f"{k}-bit": v for k, v in top(self.depths).items()},
                "formats": top(self.formats), "captions": self.captions, "arrays": self.arrays,
                "unreadable": self.unreadable, "notes": self.notes}


def _check_folder(base: Path, report: _Report, progress: bool) -> None:
    from contrastlab.data._images import IMAGE_SUFFIXES

    files, others = [], 0
    for p in sorted(base.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(base).parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            others += 1
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under '{base}'")
    nested = [p for p in files if len(p.relative_to(base).parts) > 1]
    if nested and len(nested) < len(files):
        report.notes.append("images lie both in the folder itself and in sub-folders: load it with labels=folders "
                            "(sub-folders only) or labels=none (every image, unlabelled)")
    if others:
        report.notes.append(f"{others} file(s) that are not images were ignored")
    with item_bar(len(files), "check", enabled=progress) as bar:
        for p in files:
            rel = p.relative_to(base)
            report.items += 1
            if nested:
                report.classes[rel.parts[0] if len(rel.parts) > 1 else "(no class)"] += 1
            report.image(p, str(p))
            bar.update(1)


def _check_manifest(file: Path, report: _Report, progress: bool) -> None:
    from contrastlab.data.audio import parse_wav
    from contrastlab.data.manifest import read_manifest

    rows = read_manifest(file)
    with item_bar(len(rows), "check", enabled=progress) as bar:
        for n, row in rows:
            report.items += 1
            where = f"{file.name} line {n}"
            if row.get("label"):
                report.classes[row["label"]] += 1
            if row.get("split"):
                report.splits[row["split"]] += 1
            if row.get("caption"):
                report.captions += 1
            elif "caption" in row:
                report.problem(where, "empty caption")
            for field in ("image", "audio"):
                if field not in row:
                    continue
                path = Path(row[field]).expanduser()
                path = path if path.is_absolute() else file.parent / path
                if not row[field]:
                    report.problem(where, f"empty {field}")
                elif not path.is_file():
                    report.problem(where, f"{field} file '{path}' not found")
                elif field == "image":
                    report.image(path, str(path), where)
                else:
                    try:
                        parse_wav(path.read_bytes())
                    except (ValueError, OSError) as err:
                        report.problem(where, f"cannot read audio '{path}': {one_line(err)}")
            bar.update(1)
    if not any("image" in r for _, r in rows):
        report.notes.append("no line has an 'image' field")


def _check_shards(base: Path, report: _Report, progress: bool) -> None:
    from contrastlab.data.shards import IMAGE_MEMBERS, INDEX, SHARD_NAME, read_index, shard_records

    index = read_index(base)
    classes = index.get("classes") or []
    total = sum(int(p.get("items", 0)) for p in index.get("splits", {}).values())
    with item_bar(total, "check", enabled=progress) as bar:
        for split, part in index.get("splits", {}).items():
            offset = 0
            for shard in part.get("shards", []):
                if not SHARD_NAME.fullmatch(str(shard.get("name"))):  # a name, never a path out of the folder
                    report.problem(str(shard.get("name")), f"not a shard name (listed in {INDEX})")
                    continue
                path, found = base / shard["name"], 0
                if not path.is_file():
                    report.problem(path.name, f"listed in {INDEX} but missing")
                for record in shard_records(path, offset=offset, on_error="skip") if path.is_file() else ():
                    found += 1
                    report.items += 1
                    report.splits[split] += 1
                    bar.update(1)
                    ext = next((e for e in record.fields if e in IMAGE_MEMBERS), None)
                    name = f"{path.name}:{record.key}.{ext or '?'}"
                    if ext is None:
                        report.problem(name, f"no image member (members: {', '.join(sorted(record.fields))})")
                    else:
                        report.image(record.fields[ext], name, f"shard '{path}'")
                    report.captions += "txt" in record.fields
                    if classes:
                        try:
                            report.classes[classes[int(record.fields["cls"])]] += 1
                        except (KeyError, ValueError, IndexError):
                            report.problem(name, f"no valid class index (.cls member: {record.fields.get('cls')!r})")
                if path.is_file() and found != int(shard["items"]):  # shard_records with "skip" drops a damaged tail
                    report.problem(path.name, f"{found} item(s) can be read but {INDEX} lists {shard['items']} "
                                              f"(a damaged or truncated file?)")
                offset += int(shard["items"])


def _check_arrays(file: Path, report: _Report) -> None:
    import zipfile
    import zlib

    import numpy as np

    from contrastlab.data.arrays import is_npy

    if file.suffix.lower() == ".npz" and not zipfile.is_zipfile(file):
        raise UserError(f"'{file}' is not an .npz archive (numpy.savez writes one)")
    if file.suffix.lower() == ".npy" and not is_npy(file):  # else numpy takes it for a pickle
        raise UserError(f"'{file}' is not a .npy file (it does not start with NumPy's header)")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read '{file}': {one_line(err)}") from None
    names = loaded.files if hasattr(loaded, "files") else ["(array)"]
    for name in names:
        try:
            x = loaded[name] if hasattr(loaded, "files") else loaded
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # a bad CRC-32, torn data
            report.problem(name, f"cannot read array: {one_line(err)}")
            continue
        if not isinstance(x, np.ndarray):  # numpy gives the bytes of a member that is not a .npy array
            report.problem(name, "not a .npy array")
            continue
        entry = {"name": name, "shape": list(x.shape), "dtype": str(x.dtype)}
        if np.issubdtype(x.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            entry["non_finite"] = bad
            if bad:
                report.problem(name, f"{bad} NaN or infinite value(s)")
        report.arrays.append(entry)
        if x.ndim and name != "class_names":  # one name per class (load_npz), not items
            report.items = max(report.items, int(x.shape[0]))
        if x.ndim >= 3:
            report.sizes["x".join(map(str, x.shape[1:]))] += 1
    if hasattr(loaded, "close"):
        loaded.close()


def check_source(source: str | os.PathLike, *, max_listed: int = MAX_LISTED, progress: bool = True) -> dict:
    """Read every item of ``source`` and report what was found (see the module docstring).

    Returns:
        A dict: ``kind``, ``items``, ``problems`` (the number of unreadable items or other faults),
        ``classes`` / ``splits`` / ``image_sizes`` / ``modes`` / ``bit_depths`` / ``formats`` (value -> count),
        ``captions``, ``arrays`` (``.npz``/``.npy``), ``unreadable`` (at most ``max_listed`` of
        ``{"item", "error"}``) and ``notes``.

    Raises:
        contrastlab.errors.UserError: For a source that is missing or of no known kind.
    """
    if isinstance(max_listed, bool) or not isinstance(max_listed, int) or max_listed < 0:
        raise ValueError(f"max_listed must be a non-negative integer, got {max_listed!r}")
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"source '{path}' not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        kind = "shards" if (path / "shards.json").is_file() else "image_folder"
    elif suffix in (".csv", ".jsonl", ".ndjson"):
        kind = "manifest"
    elif suffix in (".npz", ".npy"):
        kind = suffix.lstrip(".")
    else:
        raise UserError(f"source '{path}' is not an image folder, a pack, a .csv/.jsonl manifest or an .npz/.npy file")
    report = _Report(path, kind, max_listed)
    if kind == "shards":
        _check_shards(path, report, progress)
    elif kind == "image_folder":
        _check_folder(path, report, progress)
    elif kind == "manifest":
        _check_manifest(path, report, progress)
    else:
        _check_arrays(path, report)
    return report.as_dict()


def _counts(counts: dict, limit: int = 12) -> str:
    shown = [f"{k} {v}" for k, v in list(counts.items())[:limit]]
    more = f", ... ({len(counts) - limit} more)" if len(counts) > limit else ""
    return ", ".join(shown) + more


def render(report: dict) -> str:
    """The report as the lines ``data check`` prints."""
    kinds = {"image_folder": "image folder", "manifest": "manifest", "shards": "pack of shards",
             "npz": ".npz arrays", "npy": ".npy array"}
    lines = [f"{report['source']}: {kinds[report['kind']]}, {report['items']} item(s)"]
    if report["splits"]:
        lines.append(f"splits: {_counts(report['splits'])}")
    if report["classes"]:
        lines.append(f"classes ({len(report['classes'])}): {_counts(report['classes'])}")
    if report["captions"]:
        lines.append(f"captions: {report['captions']}")
    if report["image_sizes"]:
        lines.append(f"image sizes (width x height): {_counts(report['image_sizes'])}")
    if report["modes"]:
        lines.append(f"modes: {_counts(report['modes'])}; bit depths: {_counts(report['bit_depths'])}; "
                     f"formats: {_counts(report['formats'])}")
    for a in report["arrays"]:
        extra = f", {a['non_finite']} non-finite" if a.get("non_finite") else ""
        lines.append(f"array {a['name']}: shape {tuple(a['shape'])}, {a['dtype']}{extra}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    if report["problems"]:
        lines.append(f"problems: {report['problems']}")
        lines += [f"  {u['item']}: {u['error']}" for u in report["unreadable"]]
        if report["problems"] > len(report["unreadable"]):
            lines.append(f"  ... and {report['problems'] - len(report['unreadable'])} more")
    else:
        lines.append("every item can be read")
    return "\n".join(lines)
