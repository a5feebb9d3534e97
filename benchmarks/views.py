"""Section: view generation throughput, our batched SimCLR augmentation against kornia's on the same batch.

The measuring code is the views package's own :mod:`contrastlab.views.benchmark` (cases timed in turns,
best and median of repeats); this section runs it at two image sizes and records its numbers.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from benchmarks._common import Config, markdown_table, skipped

TITLE = "View generation (SimCLR augmentation) vs kornia"
OURS, KORNIA = "ours: SimCLR augmentation (one view)", "kornia: SimCLR augmentation (one view)"
STEP = "small CNN training step on two views"


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.views.benchmark") is None:
        return skipped(TITLE, "contrastlab.views.benchmark is missing (views/ not landed yet)")
    from contrastlab.views.benchmark import run as views_benchmark

    # 32 x 32 only: the views benchmark's reference CNN is built for 32-pixel inputs.
    cases = [(64, 32, 3)] if config.quick else [(256, 32, 20), (1024, 32, 5)]
    rows = []
    for batch, size, repeats in cases:
        log(f"  batch {batch} x 3 x {size} x {size} ...")
        times = views_benchmark(batch=batch, size=size, threads=config.threads, repeats=repeats)
        for name, (best, median) in times.items():
            rows.append({"batch": batch, "size": size, "case": name, "best_ms": round(best, 3),
                         "median_ms": round(median, 3), "images_per_s": round(batch / median * 1000.0, 1)})
        ours, kornia, step = (times.get(k, (None, None))[1] for k in (OURS, KORNIA, STEP))
        rows[-1]["views_share_of_step"] = round(2 * ours / (2 * ours + step), 3) if ours and step else None
        rows[-1]["speedup_over_kornia"] = round(kornia / ours, 2) if ours and kornia else None
    return {"title": TITLE, "status": "ok", "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    keys = ("batch", "size", "case", "best_ms", "median_ms", "images_per_s")
    table = [[r[k] for k in keys] for r in result["rows"]]
    notes = [f"batch {r['batch']}, {r['size']} px: two views are {r['views_share_of_step']:.1%} of views + CNN step; "
             f"ours is {r['speedup_over_kornia']}x kornia (median times)"
             for r in result["rows"] if r.get("views_share_of_step") is not None and r.get("speedup_over_kornia")]
    body = markdown_table(["batch", "px", "case", "best ms", "median ms", "images/s (median)"], table)
    return "\n\n".join([body, *notes])
