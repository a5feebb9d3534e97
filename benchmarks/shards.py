"""Section: packing an image folder into tar shards, and streaming the shards back through a DataLoader.

The images are generated PNGs (64 x 64 RGB: 16 x 16 blocks of random colour upscaled 4x plus grain, about
8 KiB each, like small photos stored as PNG) in a temporary folder that is deleted afterwards. ``pack`` is
timed once (it copies the encoded bytes, so it measures listing, header reads and tar writing); reading is
timed over one epoch of ``Shards.epoch`` through ``torch.utils.data.DataLoader`` (decoding to uint8 and
stacking batches: no views, no model), with 0 and 2 workers.

    python -m benchmarks.shards            # 60,000 images
    python -m benchmarks.shards --quick    # 2,000 images
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Config, load_average, markdown_table, skipped

TITLE = "Tar shards: pack an image folder, stream it back"
SIDE = 64
BATCH = 256


def _write_images(args: tuple[Path, int, int]) -> int:
    from PIL import Image

    folder, start, stop = args
    rng = np.random.default_rng(start)
    written = 0
    for i in range(start, stop):
        blocks = rng.integers(0, 240, (SIDE // 4, SIDE // 4, 3), dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
        grain = rng.integers(0, 16, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(blocks + grain).save(folder / f"c{i % 10}" / f"{i:06d}.png")
        written += 1
    return written


def _generate(root: Path, n: int, processes: int) -> None:
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    step = -(-n // (processes * 8))
    chunks = [(root, s, min(n, s + step)) for s in range(0, n, step)]
    with ProcessPoolExecutor(processes) as pool:
        assert sum(pool.map(_write_images, chunks)) == n


def _read(ds, workers: int) -> dict[str, Any]:
    import torch

    lanes = max(workers, 1)
    epoch = ds.epoch(0, batch_size=BATCH, seed=0, lanes=lanes)
    loader = torch.utils.data.DataLoader(epoch, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    started, items = time.perf_counter(), 0
    for batch in loader:
        items += len(batch)
    seconds = time.perf_counter() - started
    return {"workers": workers, "items": items, "seconds": round(seconds, 2), "items_per_s": round(items / seconds)}


def run(config: Config, log=print) -> dict[str, Any]:
    try:
        from contrastlab.data.pack import pack
        from contrastlab.data.shards import load_shards
    except ImportError:
        return skipped(TITLE, "contrastlab.data.shards or contrastlab.data.pack is missing")
    n = 2000 if config.quick else 60000
    tmp = Path(tempfile.mkdtemp(prefix="contrastlab-shards-"))
    try:
        started = time.perf_counter()
        _generate(tmp / "images", n, processes=max(1, min(4, os.cpu_count() or 1)))
        generate_s = time.perf_counter() - started
        png_bytes = sum(p.stat().st_size for p in (tmp / "images").rglob("*.png"))
        log(f"  generated {n} PNGs ({png_bytes / n / 1024:.1f} KiB each) in {generate_s:.1f} s")
        load_before = load_average()
        started = time.perf_counter()
        index = pack(tmp / "images", tmp / "shards", shard_items=1000, test_fraction=0, progress=False)
        pack_s = time.perf_counter() - started
        tar_bytes = sum(p.stat().st_size for p in (tmp / "shards").glob("*.tar"))
        log(f"  pack: {pack_s:.1f} s ({n / pack_s:.0f} images/s), {len(index['splits']['train']['shards'])} shards")
        ds = load_shards(root=str(tmp / "shards"))
        reads = []
        for workers in (0, 2):
            reads.append(_read(ds, workers))
            log(f"  read with {workers} workers: {reads[-1]['items_per_s']} items/s")
        return {"title": TITLE, "status": "ok", "items": n, "side": SIDE, "png_kib": round(png_bytes / n / 1024, 2),
                "tar_mib": round(tar_bytes / 2**20, 1), "pack_seconds": round(pack_s, 2),
                "pack_items_per_s": round(n / pack_s), "reads": reads, "batch_size": BATCH,
                "load_before": load_before, "load_after": load_average(), "uptime": _uptime()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _uptime() -> str:
    try:
        import subprocess

        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def markdown(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"skipped: {result.get('note', '')}"
    head = (f"{result['items']} PNGs of {result['side']}x{result['side']} ({result['png_kib']} KiB each, "
            f"{result['tar_mib']} MiB of shards); batch {result['batch_size']}; load {result['load_before']} -> "
            f"{result['load_after']}.")
    rows = [["pack (copy bytes into 1000-item tar shards)", "—", result["pack_seconds"], result["pack_items_per_s"]]]
    rows += [[f"read one epoch (decode to uint8, stack)", r["workers"], r["seconds"], r["items_per_s"]]
             for r in result["reads"]]
    return head + "\n\n" + markdown_table(["step", "workers", "seconds", "items/s"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images instead of 60,000")
    result = run(Config(quick=parser.parse_args().quick))
    print(markdown(result))
    print(result.get("uptime", ""))
