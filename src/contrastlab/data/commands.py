r"""``contrastlab data check SOURCE`` and ``contrastlab data pack SOURCE --out SHARDS/``: a thin front.

``data check`` calls :func:`~contrastlab.data.check.check_source` (which reads every item of an image
folder, a manifest, a pack of shards, or an ``.npz`` / ``.npy`` file and reports what a data set would
see) and prints its report. Its exit status follows linters: 0 when every item can be read, 1 when it
found problems (listed on stdout, one summary line on stderr), 2 for a usage error (a missing source, a
bad option). ``data pack`` calls :func:`~contrastlab.data.pack.pack`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from contrastlab.data.check import MAX_LISTED, check_source, render
from contrastlab.errors import UserError

_EPILOG = ("exit status: 0 every item can be read; 1 problems found (listed on stdout, a summary on stderr); "
           "2 usage error (missing source, bad option)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data check`` and ``data pack`` to the command line's sub-parsers."""
    d = sub.add_parser("data", help="check a data source, or pack it into tar shards for streaming",
                       description="Work with data sources: `check` reads every item and reports what it finds; "
                                   "`pack` writes an image folder or manifest as tar shards (WebDataset layout).")
    commands = d.add_subparsers(dest="data_command", metavar="COMMAND")
    d.set_defaults(func=_no_command)

    c = commands.add_parser("check", help="read every item of a source and report counts, classes, sizes and "
                                          "unreadable files", epilog=_EPILOG,
                            description="Read every item of SOURCE and report counts, classes, image sizes, modes "
                                        "and bit depths, and every unreadable item.")
    c.add_argument("source", metavar="SOURCE", help="an image folder, a .csv/.jsonl manifest, a pack's folder "
                                                    "(holding shards.json), or an .npz/.npy file")
    c.add_argument("--max-listed", type=int, default=MAX_LISTED, metavar="N",
                   help=f"name at most N unreadable items (default {MAX_LISTED}; all are counted)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_check)

    p = commands.add_parser("pack", help="write an image folder or image-caption manifest as tar shards",
                            description="Write SOURCE as tar shards (members KEY.png / KEY.cls / KEY.txt) plus an "
                                        "index, shards.json, for the data set 'shards'. Image bytes are copied, "
                                        "not re-encoded; the train/test split is made here, as the source's own "
                                        "data set makes it.")
    p.add_argument("source", metavar="SOURCE", help="an image folder (class sub-folders or flat) or a .csv/.jsonl "
                                                    "manifest with image and caption fields")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    p.add_argument("--shard-items", type=int, default=1000, metavar="N", help="items per shard (default 1000)")
    p.add_argument("--shard-mb", type=float, default=None, metavar="MB",
                   help="also start a new shard once one reaches MB megabytes")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="fraction of each class in the test split (default 0.2; 0: all in train; a manifest's "
                        "split column wins)")
    p.add_argument("--labels", choices=("auto", "folders", "none"), default="auto",
                   help="image folder: class sub-folders, none, or auto (default)")
    p.add_argument("--size", type=_size, default=None, metavar="N|HxW",
                   help="resize every image and store it as PNG (default: copy the original bytes)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="channels of resized images (default 3)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="keep the source's order (default: a fixed pseudo-random order, so shards mix classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the item order (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous pack in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_pack)


def _no_command(args: argparse.Namespace) -> int:
    raise UserError("name a data command: check, pack")


def _size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 64 or 48x64), got {text!r}") from None


def _pack(args: argparse.Namespace) -> int:
    from contrastlab.data.pack import pack

    started = time.perf_counter()
    index = pack(args.source, args.out, shard_items=args.shard_items, shard_mb=args.shard_mb,
                 test_fraction=args.test_fraction, labels=args.labels, size=args.size, channels=args.channels,
                 shuffle=not args.no_shuffle, seed=args.seed, overwrite=args.overwrite,
                 progress=not args.no_progress)
    seconds = time.perf_counter() - started
    parts = [f"{s} {p['items']} in {len(p['shards'])} shard(s)" for s, p in index["splits"].items() if p["items"]]
    total = sum(p["items"] for p in index["splits"].values())
    print(f"packed {total} items ({', '.join(parts)}) into {args.out} in {seconds:.1f} s "
          f"({total / max(seconds, 1e-9):.0f} items/s)")
    return 0


def _check(args: argparse.Namespace) -> int:
    if args.max_listed < 0:
        raise UserError(f"--max-listed must be at least 0, got {args.max_listed}")
    report = check_source(args.source, max_listed=args.max_listed, progress=not args.no_progress)
    print(json.dumps(report, indent=1) if args.json else render(report))
    if report["problems"]:
        print(f"contrastlab: {report['problems']} problem(s) in {report['items']} item(s) of {args.source}",
              file=sys.stderr)
        return 1
    return 0
