"""``contrastlab objectives``: list every objective with its formula and reference."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("objectives", help="list every objective with its formula and reference")
    p.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    from contrastlab.objectives.registry import OBJECTIVES

    width = max((len(n) for n in OBJECTIVES), default=0)
    for name, spec in sorted(OBJECTIVES.items()):
        needs = f", {spec.min_modalities}+ modalities" if spec.min_modalities > 1 else ""
        if spec.reads:  # a method: the step outputs it reads beyond the embeddings
            needs += ": reads " + ", ".join(sorted(spec.reads - {"embeddings"}))
        print(f"{name:<{width}}  [{spec.kind}{needs}]  {spec.formula}")
        print(f"{'':<{width}}  {spec.reference}")
    return 0
