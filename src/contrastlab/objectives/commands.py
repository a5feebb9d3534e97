"""``contrastlab objectives [NAME]``: every objective with its formula, reference and options.

The same listing as ``contrastlab list objectives``; both are :mod:`contrastlab.catalog`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from contrastlab.catalog import add_listing_arguments, run_listing

    p = sub.add_parser("objectives", help="list every objective with its formula, reference and options "
                                          "(the same as `contrastlab list objectives`)")
    add_listing_arguments(p)
    p.set_defaults(func=run_listing, kind="objectives")
