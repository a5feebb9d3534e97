r"""Section: training from image files through loader workers, against the same images held in memory.

Every training run is a fresh ``python -m contrastlab train`` process (SimCLR views, the small conv net, dim 64,
NT-Xent tau = 0.2, batch 256, no checkpoint but the last, a ``metrics.csv`` row every 10 steps). The images are
generated PNGs of smooth colour noise plus grain (random colours on a 1/8-size grid upscaled bicubically, Gaussian
grain of sigma 6: about 2.3 KB at 32 x 32 and 8.8 KB at 64 x 64, like small photos stored as PNG), written by 2
processes into a temporary folder that is deleted at the end. Data sets hold 99% of the images (``test_fraction:
0.01``).

1. **Peak memory, flat in the number of images** (64 x 64, 10,000 and 60,000 files, 2 workers; the conv net
   average-pools, as flattening gives a 4,096-wide head at this size; ``threads: 1``). A thread reads ``VmRSS`` from
   ``/proc/<pid>/status`` for the trainer and every descendant (loader workers) every 50 ms and keeps the largest
   sum (``peak_rss``, what the issue limits: a forked worker's copied page tables make it count the pages it
   shares with the trainer again) and the trainer's own peak; ``Pss`` from ``/proc/<pid>/smaps_rollup`` (shared
   pages divided among their users: the tree's real footprint) is summed every 0.25 s. Also: the largest folder
   with no workers, with two prototypes (``trim``: glibc ``malloc_trim`` before the workers fork; ``forkserver``:
   workers started from a fresh process) and 1,000 of the images in memory (the trainer's own peak). The old way
   (every image decoded into one float32 tensor) is the arithmetic N x 3 x 64 x 64 x 4 bytes.
2. **Items/s** (32 x 32, 10,000 files): (a) the folder with 2 workers, (b) the same images as an ``.npz`` of uint8
   (N, 32, 32, 3) -- :func:`~contrastlab.data.arrays.load_npz` reads arrays under 64 MiB into memory, so this is an
   in-memory data set without workers -- (c) the folder with 0 workers and (d) with 1 worker, each with torch's
   default threads, with ``threads: 1`` and with the default and ``OMP_WAIT_POLICY=PASSIVE``; and prototypes of
   fixes with the default threads: (e) 2 workers decoding through :func:`_fast_get`, (f) the same with 0 workers,
   (g) 2 workers at nice 10, (h) the folder decoded into memory when it is built (when its uint8 images fit under
   ``load_npz``'s in-memory limit). All repeated in turns; items/s and data_wait (mean seconds a step waited for
   its batch) come from ``metrics.csv`` without its first row (warm-up).
3. **Where the time goes**, in this process, timed in turns: decoding a batch (:meth:`ImageFolder.get`, the
   prototype, Pillow alone), the in-memory ``get``, the views; each loader alone (no training) through
   :class:`~contrastlab.data.loading.Batches`, and the trainer's CPU time to receive a batch from a worker. The
   cores of decoding needed to feed the in-memory speed bound the ratio a trainer using all cores could keep.

Prototypes run as ``python -m benchmarks.data_loading PATCH[+PATCH] CONFIG OUT``: the trainer with patches applied
(nothing under ``src/`` is changed).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks._common import GIB, MIB, ROOT, Config, load_average, markdown_table, skipped, time_interleaved

TITLE = "Data loading: image files through loader workers against in-memory data (peak memory, items/s)"
BATCH = 256
GOAL_RSS_GIB = 1.2  #: peak RSS of the trainer and its 2 workers, 64 x 64 images
GOAL_RATIO = 0.7  #: folder with 2 workers / in memory, items/s
TEST_FRACTION = 0.01


# --------------------------------------------------------------------------------------------- images on disk


def _smooth_noise(rng: np.random.Generator, side: int) -> np.ndarray:
    """One uint8 (side, side, 3) image: random colours on a 1/8-size grid, bicubic-upscaled, plus grain."""
    from PIL import Image

    low = rng.integers(0, 256, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.normal(0.0, 6.0, (side, side, 3)).round().astype(np.int16)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _write_images(args: tuple[str, int, int, int, int]) -> int:
    from PIL import Image

    folder, side, start, stop, seed = args
    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        Image.fromarray(_smooth_noise(rng, side)).save(Path(folder) / f"{i:06d}.png")
    return stop - start


def generate_images(folder: Path, n: int, side: int, *, seed: int = 0, processes: int = 2) -> int:
    """Write ``n`` PNGs ``000000.png ...`` into ``folder`` with ``processes`` processes; returns their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, -(-n // (processes * 8)))
    chunks = [(str(folder), side, s, min(n, s + step), seed) for s in range(0, n, step)]
    with ProcessPoolExecutor(processes) as pool:
        if sum(pool.map(_write_images, chunks)) != n:
            raise RuntimeError(f"wrote fewer than {n} images into {folder}")
    return sum(p.stat().st_size for p in folder.iterdir())


def link_first(source: Path, folder: Path, n: int) -> None:
    """``folder`` holding hard links to the first ``n`` images of ``source`` (no second copy on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.link(source / f"{i:06d}.png", folder / f"{i:06d}.png")


def write_npz(folder: Path, n: int, path: Path) -> None:
    """The ``n`` images of ``folder`` decoded into ``x`` uint8 (N, H, W, 3), stored uncompressed (``numpy.savez``)."""
    from PIL import Image

    first = np.asarray(Image.open(folder / f"{0:06d}.png"))
    x = np.empty((n, *first.shape), dtype=np.uint8)
    for i in range(n):
        with Image.open(folder / f"{i:06d}.png") as img:
            x[i] = np.asarray(img)
    np.savez(path, x=x)


# ------------------------------------------------------------------------------- memory of a process tree


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _field(pid: int, name: str, key: str) -> int | None:
    """A ``kB`` value of ``/proc/<pid>/<name>`` in bytes (``None`` once the process is gone)."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class TreeMemory:
    """Samples the resident memory of process ``pid`` and all its descendants in a background thread.

    Every ``interval`` s: the sum of ``VmRSS`` over the tree (its peak is ``peak_rss``) and the trainer's own;
    every ``rescan`` s: the tree's members again (a scan of ``/proc``) and the sum of their ``Pss``. Each process's
    own high-water mark ``VmHWM`` is kept as last seen (``hwm_sum``: an upper bound of ``peak_rss``).
    """

    def __init__(self, pid: int, *, interval: float = 0.05, rescan: float = 0.25) -> None:
        self.pid, self.interval, self.rescan = pid, interval, rescan
        self.peak_rss = self.peak_main = self.peak_pss = 0
        self.max_processes = 0
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _members(self) -> list[int]:
        tree, out, todo = _children_map(), [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += tree.get(pid, [])
        return out

    def _run(self) -> None:
        members, last_scan = [self.pid], float("-inf")
        while not self._stop.is_set():
            scan = time.monotonic() - last_scan >= self.rescan
            if scan:
                members, last_scan = self._members(), time.monotonic()
            rss = {pid: _field(pid, "status", "VmRSS:") for pid in members}
            rss = {pid: v for pid, v in rss.items() if v is not None}
            self.peak_rss = max(self.peak_rss, sum(rss.values()))
            self.peak_main = max(self.peak_main, rss.get(self.pid, 0))
            self.max_processes = max(self.max_processes, len(rss))
            if scan:
                for pid in rss:
                    hwm = _field(pid, "status", "VmHWM:")
                    if hwm is not None:
                        self.hwm[pid] = hwm
                pss = [_field(pid, "smaps_rollup", "Pss:") for pid in rss]
                self.peak_pss = max(self.peak_pss, sum(v for v in pss if v is not None))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, Any]:
        return {"peak_rss_mib": round(self.peak_rss / MIB, 1), "peak_main_mib": round(self.peak_main / MIB, 1),
                "peak_pss_mib": round(self.peak_pss / MIB, 1), "hwm_sum_mib": round(sum(self.hwm.values()) / MIB, 1),
                "processes": self.max_processes}


# --------------------------------------------------------------------------------------------- training runs


def train_config(data: dict[str, Any], *, steps: int, threads: int | None, every: int = 10, batch: int = BATCH,
                 workers: int | None = None, pool: str = "flatten") -> dict[str, Any]:
    """A SimCLR recipe on ``data`` (``{"name": ..., "options": ...}``) with ``workers`` loader processes; ``pool``
    is the conv net's (``"avg"`` keeps its head small at 64 x 64, where flattening gives 4,096 features)."""
    return {
        "data": {**data, "num_workers": workers},
        "views": {"name": "simclr"},
        "objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
        "model": {"encoder": {"name": "convnet", "options": {"pool": pool}}, "dim": 64},
        "batch_size": batch,
        "steps": steps,
        "device": "cpu",
        "threads": threads,
        "checkpoint": {"every": 0},
        "log": {"every": every, "tensorboard": False, "progress": False},
    }


def steady(rows: list[dict[str, float]]) -> dict[str, float]:
    """items/s and mean data_wait per step over the ``metrics.csv`` rows after the first (warm-up)."""
    steps = [b["step"] - a for a, b in zip([0] + [r["step"] for r in rows[:-1]], rows)]
    kept = list(zip(steps, rows))[1:] or list(zip(steps, rows))
    seconds = sum(s / r["items_per_s"] for s, r in kept)  # in units of batch-size seconds
    return {"items_per_s": round(sum(s for s, _ in kept) / seconds, 1),
            "data_wait_ms": round(1e3 * sum(s * r["data_wait"] for s, r in kept) / sum(s for s, _ in kept), 2),
            "view_fraction": round(sum(s * r["view_fraction"] for s, r in kept) / sum(s for s, _ in kept), 3)}


def train_run(cfg: dict[str, Any], work: Path, name: str, *, patch: str | None = None,
              env: dict[str, str] | None = None, timeout_s: float = 1800.0) -> dict[str, Any]:
    """One training run in a fresh process (``patch``: prototypes to apply, ``env``: extra environment variables),
    its process tree sampled: peak memory, wall time, steady items/s."""
    import yaml

    from contrastlab.training.logging import read_metrics

    run_dir, cfg_path = work / name, work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = ([sys.executable, "-m", "benchmarks.data_loading", patch, str(cfg_path), str(run_dir)] if patch else
           [sys.executable, "-m", "contrastlab", "train", str(cfg_path), "--out", str(run_dir), "--overwrite"])
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    load_before, t0 = load_average(), time.perf_counter()
    with open(work / f"{name}.log", "w+") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as memory:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{name}: timed out after {timeout_s:.0f} s") from None
        log_file.seek(0)
        tail = log_file.read()[-400:]
    if rc != 0:
        raise RuntimeError(f"{name}: exit status {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
    rows = read_metrics(run_dir / "metrics.csv")
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"name": name, "wall_s": round(time.perf_counter() - t0, 2), **steady(rows), **memory.result(),
            "load_before": load_before, "load_after": load_average()}


# ---------------------------------------------------------------------------------- prototypes of fixes


def _fast_get(self, index):
    """``ImageFolder.get`` decoding straight into one uint8 (B, H, W, C) array: 8-bit images of the data set's
    mode and size take Pillow's path alone (no existence check, warning filter, depth conversion or per-item
    shape check, no ``np.stack``); anything else goes the checked way of ``read``."""
    import torch
    from PIL import Image

    from contrastlab.data.base import Batch

    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    c, h, w = self.modalities["image"]
    mode = "RGB" if c == 3 else "L"
    out = np.empty((len(index), h, w, c), dtype=np.uint8)
    taken, skipped = index.tolist(), 0
    for row, i in enumerate(taken):
        try:
            with Image.open(os.path.join(self.root, self.files[i])) as img:
                if img.mode == mode and img.size == (w, h) and self.size is None:
                    out[row] = np.asarray(img).reshape(h, w, c)
                    continue
        except Exception:  # noqa: BLE001 - the checked path below names the problem
            pass
        taken[row], inputs, _, missed = self._read_or_replace(i)
        out[row], skipped = inputs["image"].transpose(1, 2, 0), skipped + missed
    taken_t = torch.tensor(taken, dtype=torch.int64)
    return Batch(inputs={"image": torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()},
                 labels=None if self.labels is None else torch.from_numpy(self.labels[taken_t.numpy()]),
                 index=taken_t, skipped=skipped)


def _patch_fast_decode() -> None:
    from contrastlab.data.user import ImageFolder

    ImageFolder.get = _fast_get


def _patch_trim() -> None:
    """Return the heap's free pages to the system (glibc ``malloc_trim``) just before the loader forks its
    workers: the trial step's freed activations are then not copied into every worker's page tables."""
    import ctypes

    from contrastlab.data import loading

    libc, make = ctypes.CDLL("libc.so.6"), loading.map_loader

    def map_loader(*args, **kwargs):
        libc.malloc_trim(0)
        return make(*args, **kwargs)

    loading.map_loader = map_loader


def _patch_forkserver() -> None:
    """Start loader workers from a fresh ``forkserver`` process instead of forking the trainer."""
    from contrastlab.data.loading import LoaderOptions

    kwargs = LoaderOptions.kwargs

    def with_context(self, dataset, device):
        out = kwargs(self, dataset, device)
        return {**out, "multiprocessing_context": "forkserver"} if out["num_workers"] > 0 else out

    LoaderOptions.kwargs = with_context


def _lower_priority(worker_id: int) -> None:
    os.nice(10)


def _patch_nice() -> None:
    """Loader workers at nice 10: under contention the trainer's threads keep their cores, workers fill the gaps."""
    from contrastlab.data.loading import LoaderOptions

    kwargs = LoaderOptions.kwargs

    def with_nice(self, dataset, device):
        out = kwargs(self, dataset, device)
        return {**out, "worker_init_fn": _lower_priority} if out["num_workers"] > 0 else out

    LoaderOptions.kwargs = with_nice


def _patch_preload() -> None:
    """An image folder whose decoded uint8 images fit under ``load_npz``'s in-memory limit is decoded once when it
    is built and held in memory (``MappedArrays``, ``in_memory``: the loop then gives it no workers)."""
    import functools

    import torch

    from contrastlab.data import registry
    from contrastlab.data.arrays import IN_MEMORY_BYTES, MappedArrays

    load = registry.DATASETS["image_folder"]

    @functools.wraps(load)
    def load_and_decode(**options):
        ds = load(**options)
        if len(ds) * int(np.prod(ds.modalities["image"])) > IN_MEMORY_BYTES:
            return ds
        x = ds.get(torch.arange(len(ds))).inputs["image"].numpy()
        return MappedArrays(ds.name, x, modality="image", layout="nchw", labels=ds.labels, classes=ds.classes)

    registry.DATASETS["image_folder"] = load_and_decode


PATCHES: dict[str, Callable[[], None]] = {"fast_decode": _patch_fast_decode, "trim": _patch_trim,
                                          "forkserver": _patch_forkserver, "nice": _patch_nice,
                                          "preload": _patch_preload}


def _driver(argv: list[str]) -> int:
    """``python -m benchmarks.data_loading PATCH[+PATCH...] CONFIG OUT``: train with prototype patches applied."""
    patches, cfg, out = argv
    for name in patches.split("+"):
        PATCHES[name]()
    from contrastlab.cli import main

    return main(["train", cfg, "--out", out, "--overwrite"])


# ----------------------------------------------------------------------------------- where the time goes


def loader_alone(dataset, *, workers: int, steps: int, batch: int) -> dict[str, float]:
    """Items/s of reading ``steps`` batches through :class:`Batches` with ``workers`` workers and nothing else,
    timed from the first batch (worker start-up left out), and the reading process's CPU time per batch."""
    import torch

    from contrastlab.data.loading import Batches, LoaderOptions
    from contrastlab.training.sampler import ShardedBatches

    sampler = ShardedBatches(len(dataset), batch, seed=0)
    reader = Batches(dataset, sampler, 0, steps + 1, options=LoaderOptions(num_workers=workers),
                     device=torch.device("cpu"), seed=0)
    batches = iter(reader)
    next(batches)
    t0, c0 = time.perf_counter(), time.process_time()
    waits = []
    for _ in range(steps):
        next(batches)
        waits.append(reader.wait)
    seconds = time.perf_counter() - t0
    return {"items_per_s": round(steps * batch / seconds, 1),
            "main_cpu_ms_per_batch": round(1e3 * (time.process_time() - c0) / steps, 2),
            "wait_ms": round(1e3 * statistics.mean(waits), 2)}


def where_time_goes(folder, memory, *, batch: int, budget_s: float, loader_steps: int) -> dict[str, Any]:
    """Per-batch costs in this process, timed in turns (decoding is one thread; the views use torch's threads)."""
    import torch
    from PIL import Image

    from contrastlab.data.base import to_device
    from contrastlab.views.simclr import SimCLRViews

    index = torch.arange(batch)
    paths = [os.path.join(folder.root, folder.files[i]) for i in range(batch)]

    def pillow_alone():
        for p in paths:
            with Image.open(p) as img:
                np.asarray(img)

    fast = _fast_get.__get__(folder)
    same = bool(torch.equal(fast(index).inputs["image"], folder.get(index).inputs["image"])
                and torch.equal(memory.get(index).inputs["image"], folder.get(index).inputs["image"]))
    views = SimCLRViews(memory)
    sample = memory.get(index)
    rng = torch.Generator().manual_seed(0)
    timed = time_interleaved({
        "folder_get": lambda: folder.get(index),
        "folder_get_fast": lambda: fast(index),
        "pillow_alone": pillow_alone,
        "memory_get": lambda: memory.get(index),
        "to_device_and_views": lambda: views(to_device(sample, "cpu"), rng),
    }, budget_s=budget_s, max_repeats=15)
    ms = {k: v["seconds"] * 1e3 for k, v in timed.items()}
    loaders = {f"{kind}_w{w}": loader_alone(ds, workers=w, steps=loader_steps, batch=batch)
               for kind, ds in (("folder", folder), ("memory", memory)) for w in (0, 1, 2)}
    t0 = time.perf_counter()
    folder.get(torch.arange(len(folder)))
    preload_s = time.perf_counter() - t0
    ipc = loaders["memory_w1"]["main_cpu_ms_per_batch"] - loaders["memory_w0"]["main_cpu_ms_per_batch"]
    return {"ms_per_batch": {k: round(v, 2) for k, v in ms.items()},
            "spread": {k: v["spread"] for k, v in timed.items()},
            "us_per_image": {k: round(1e3 * ms[k] / batch, 1) for k in ("folder_get", "folder_get_fast", "pillow_alone")},
            "receive_ms_per_batch": round(ipc, 2), "preload_s": round(preload_s, 2), "same_images": same, "loader_alone": loaders,
            "threads": torch.get_num_threads(), "load_after": load_average()}


# ----------------------------------------------------------------------------------------------- the section

#: How the trainer's threads are set in the items/s runs: name -> (the ``threads`` config key, extra environment).
THREAD_SETTINGS: dict[str, tuple[int | None, dict[str, str]]] = {
    "default": (None, {}),  # torch's default: one thread per core
    "threads 1": (1, {}),
    "default, OMP_WAIT_POLICY=PASSIVE": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),  # OpenMP threads sleep, not spin
}

#: The items/s cases (32 x 32): name -> (data set, loader workers, prototype patches). The library's cases run
#: with every thread setting, the prototypes (with patches) with the default threads only.
SPEED_CASES: dict[str, tuple[str, int | None, str | None]] = {
    "a folder, 2 workers": ("folder", 2, None),
    "b in memory (.npz)": ("memory", None, None),
    "c folder, 0 workers": ("folder", 0, None),
    "d folder, 1 worker": ("folder", 1, None),
    "e folder, 2 workers, fast decode": ("folder", 2, "fast_decode"),
    "f folder, 0 workers, fast decode": ("folder", 0, "fast_decode"),
    "g folder, 2 workers at nice 10": ("folder", 2, "nice"),
    "h folder decoded into memory when built": ("folder", None, "preload"),
}
MEMORY_CASE = "b in memory (.npz)"

#: The peak-memory cases (64 x 64): (data set: "small" / "large" folder or "baseline" .npz, workers, patches).
MEMORY_CASES: tuple[tuple[str, int | None, str | None], ...] = (
    ("small", 2, None),
    ("large", 2, None),
    ("large", 0, None),
    ("large", 2, "trim"),
    ("large", 2, "forkserver"),
    ("baseline", None, None),  # 1,000 of the images held in memory: the trainer's own peak, for comparison
)


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"memory_ns": (200, 400), "baseline_n": 200, "memory_steps": 4, "speed_n": 400, "speed_steps": 4,
                "every": 2, "batch": 32, "repeats": 1, "settings": ("default",),
                "speed_cases": ("a folder, 2 workers", MEMORY_CASE),  # the quick mode checks the plumbing:
                "memory_cases": MEMORY_CASES[:2],  # each case is a training process (~5 s of start-up alone)
                "profile_budget_s": 1.0, "loader_steps": 4}
    return {"memory_ns": (10_000, 60_000), "baseline_n": 1_000, "memory_steps": 30, "speed_n": 10_000,
            "speed_steps": 50, "every": 10, "batch": BATCH, "repeats": 3, "settings": tuple(THREAD_SETTINGS),
            "speed_cases": tuple(SPEED_CASES), "memory_cases": MEMORY_CASES, "profile_budget_s": 20.0, "loader_steps": 40}


def _folder(root: Path) -> dict[str, Any]:
    return {"name": "image_folder", "options": {"root": str(root), "labels": "none", "test_fraction": TEST_FRACTION}}


def _npz(path: Path) -> dict[str, Any]:
    return {"name": "npz", "options": {"path": str(path), "y": None, "test_fraction": TEST_FRACTION}}


def _memory_part(work: Path, s: dict[str, Any], log) -> dict[str, Any]:
    small, large = s["memory_ns"]
    t0 = time.perf_counter()
    disk = generate_images(work / "png64_large", large, 64, seed=1)
    link_first(work / "png64_large", work / "png64_small", small)
    write_npz(work / "png64_large", s["baseline_n"], work / "png64_baseline.npz")
    log(f"  wrote {large:,} PNGs of 64 x 64 ({disk / MIB:.0f} MiB) in {time.perf_counter() - t0:.0f} s; "
        f"load {load_average()}")
    data = {"small": _folder(work / "png64_small"), "large": _folder(work / "png64_large"),
            "baseline": _npz(work / "png64_baseline.npz")}
    images = {"small": small, "large": large, "baseline": s["baseline_n"]}
    rows = []
    for which, workers, patch in s["memory_cases"]:
        cfg = train_config(data[which], steps=s["memory_steps"], threads=1, every=s["every"], batch=s["batch"],
                           workers=workers, pool="avg")
        r = train_run(cfg, work, f"mem_{which}_w{workers}_{patch}", patch=patch)
        n = images[which]
        rows.append({"source": "in memory (.npz)" if which == "baseline" else "folder", "images": n, "workers": workers,
                     "patch": patch, **r, "float32_mib": round(n * 3 * 64 * 64 * 4 / MIB, 1)})
        log(f"  {rows[-1]['source']}, {n:,} images, workers {workers}, patch {patch}: peak RSS {r['peak_rss_mib']:.0f} "
            f"MiB (trainer {r['peak_main_mib']:.0f}, PSS {r['peak_pss_mib']:.0f}, {r['processes']} processes); "
            f"{r['items_per_s']:.0f} items/s; load {r['load_after']}")
    shutil.rmtree(work / "png64_small")
    shutil.rmtree(work / "png64_large")
    plain = [r for r in rows if r["source"] == "folder" and r["workers"] == 2 and r["patch"] is None]
    return {"png_mib": round(disk / MIB, 1), "steps": s["memory_steps"], "threads": 1, "rows": rows,
            "growth_rss_mib": round(plain[-1]["peak_rss_mib"] - plain[0]["peak_rss_mib"], 1),
            "growth_pss_mib": round(plain[-1]["peak_pss_mib"] - plain[0]["peak_pss_mib"], 1),
            "goal_met": all(r["peak_rss_mib"] < GOAL_RSS_GIB * 1024 for r in plain)}


def _speed_part(work: Path, s: dict[str, Any], log) -> dict[str, Any]:
    from contrastlab.data.arrays import load_npz
    from contrastlab.data.user import load_image_folder

    n = s["speed_n"]
    root, npz = work / "png32", work / "png32.npz"
    generate_images(root, n, 32, seed=2)
    write_npz(root, n, npz)
    data = {"folder": _folder(root), "memory": _npz(npz)}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(s["repeats"]):
        for setting in s["settings"]:
            threads, env = THREAD_SETTINGS[setting]
            for case in s["speed_cases"]:
                source, workers, patch = SPEED_CASES[case]
                if patch and setting != "default":
                    continue
                cfg = train_config(data[source], steps=s["speed_steps"], threads=threads, every=s["every"],
                                   batch=s["batch"], workers=workers)
                r = train_run(cfg, work, f"speed_{len(runs)}_{rep}", patch=patch, env=env)
                runs.setdefault((case, setting), []).append(r)
                log(f"  {case}, {setting}, repetition {rep + 1}: {r['items_per_s']:.0f} items/s, data_wait "
                    f"{r['data_wait_ms']:.1f} ms/step; load {r['load_before']} → {r['load_after']}")
    rows = [{"case": case, "setting": setting, "workers": SPEED_CASES[case][1],
             "items_per_s": round(statistics.median(r["items_per_s"] for r in rs), 1),
             "samples": [r["items_per_s"] for r in rs],
             "data_wait_ms": round(statistics.median(r["data_wait_ms"] for r in rs), 2),
             "view_fraction": round(statistics.median(r["view_fraction"] for r in rs), 3),
             "peak_rss_mib": max(r["peak_rss_mib"] for r in rs), "peak_pss_mib": max(r["peak_pss_mib"] for r in rs),
             "load": [r["load_before"] for r in rs] + [rs[-1]["load_after"]]} for (case, setting), rs in runs.items()]
    by = {(r["case"], r["setting"]): r["items_per_s"] for r in rows}
    ratios = {f"{case} / b, {setting}": round(v / by[(MEMORY_CASE, setting)], 3)
              for (case, setting), v in by.items() if case != MEMORY_CASE}
    best = {case: max(v for (c, _), v in by.items() if c == case) for case in s["speed_cases"]}
    best_ratio = best["a folder, 2 workers"] / best[MEMORY_CASE]
    library = max((v, c, t) for (c, t), v in by.items() if SPEED_CASES[c][0] == "folder" and not SPEED_CASES[c][2])
    log(f"  profiling ... (load {load_average()})")
    memory_ds = load_npz(path=str(npz), y=None, test_fraction=TEST_FRACTION)
    folder_ds = load_image_folder(root=str(root), labels="none", test_fraction=TEST_FRACTION)
    profile = where_time_goes(folder_ds, memory_ds, batch=s["batch"], budget_s=s["profile_budget_s"],
                              loader_steps=s["loader_steps"])
    decode_s = profile["us_per_image"]["folder_get"] * 1e-6
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    shutil.rmtree(root)
    npz.unlink()
    return {"images": n, "train_items": len(folder_ds), "memory_in_memory": bool(memory_ds.in_memory),
            "steps": s["speed_steps"], "every": s["every"], "repeats": s["repeats"], "rows": rows,
            "ratios": ratios, "best_items_per_s": best, "best_ratio": round(best_ratio, 3),
            "goal_met": best_ratio >= GOAL_RATIO, "profile": profile,
            "best_library_folder": {"case": library[1], "setting": library[2],
                                    "ratio": round(library[0] / best[MEMORY_CASE], 3)},
            "decode_cores": round(decode_s * best[MEMORY_CASE], 3), "cores": cores,
            "sharing_bound": round(1 / (1 + decode_s * best[MEMORY_CASE] / cores), 3)}


def run(config: Config, log=print) -> dict[str, Any]:
    try:
        from contrastlab.data.loading import Batches  # noqa: F401
        from contrastlab.data.user import ImageFolder  # noqa: F401
    except ImportError as err:
        return skipped(TITLE, f"contrastlab's on-demand image loading does not import: {err}")
    if not Path("/proc/self/status").is_file():
        return skipped(TITLE, "needs /proc to sample the memory of a process tree")
    s = _sizes(config.quick)
    work = Path(tempfile.mkdtemp(prefix="contrastlab_data_loading_"))
    try:
        need, free = 12_000 * max(s["memory_ns"]), shutil.disk_usage(work).free  # ~9 KB a PNG, with room
        if free < need:
            return skipped(TITLE, f"needs about {need / GIB:.1f} GiB free under {work.parent}, has {free / GIB:.1f}")
        memory = _memory_part(work, s, log)
        speed = _speed_part(work, s, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"title": TITLE, "status": "ok", "batch": s["batch"], "test_fraction": TEST_FRACTION,
            "rss_method": "the sum of VmRSS (/proc/<pid>/status) over the trainer and its descendants, every 50 ms",
            "goal_rss_gib": GOAL_RSS_GIB, "goal_ratio": GOAL_RATIO, "memory": memory, "speed": speed,
            "goal_met": memory["goal_met"] and speed["goal_met"]}


def markdown(result: dict[str, Any]) -> str:
    m, sp = result["memory"], result["speed"]
    mem_rows = [[r["source"], f"{r['images']:,}", "—" if r["workers"] is None else r["workers"], r["patch"] or "—",
                 r["peak_rss_mib"], r["peak_main_mib"], r["peak_pss_mib"], r["hwm_sum_mib"], r["processes"],
                 r["items_per_s"], r["float32_mib"], f"{r['load_before']} → {r['load_after']}"] for r in m["rows"]]
    speed_rows = [[r["case"], r["setting"], r["items_per_s"], ", ".join(f"{v:.0f}" for v in r["samples"]),
                   r["data_wait_ms"], r["view_fraction"], r["peak_rss_mib"], r["peak_pss_mib"],
                   " → ".join(str(v) for v in r["load"])] for r in sp["rows"]]
    p, lib = sp["profile"], sp["best_library_folder"]
    loaders = [[k, v["items_per_s"], v["wait_ms"], v["main_cpu_ms_per_batch"]] for k, v in p["loader_alone"].items()]
    return "\n".join([
        f"Fresh `python -m contrastlab train` processes (prototype patches: `python -m benchmarks.data_loading PATCH`), "
        f"SimCLR views, conv net, dim 64, batch {result['batch']}; generated PNGs (smooth colour noise + grain), "
        f"{1 - result['test_fraction']:.0%} of them in the training split. Peak RSS: {result['rss_method']} (a forked "
        f"worker counts the pages it shares with the trainer again); PSS (shared pages divided among their users) "
        f"summed every 0.25 s; HWM sum: each process's own peak, added.",
        "",
        f"**Peak memory** (64 x 64, conv net with average pooling, {m['steps']} steps, threads {m['threads']}; "
        f"{m['png_mib']:.0f} MiB of PNGs in the largest folder). Goal: peak RSS < {result['goal_rss_gib']} GiB with 2 "
        f"workers: {'met' if m['goal_met'] else 'not met'}; from the smallest to the largest folder it grew "
        f"{m['growth_rss_mib']} MiB (PSS {m['growth_pss_mib']} MiB). 'float32 (MiB)' is what the old way held for the "
        f"decoded images alone (N x 3 x 64 x 64 x 4 bytes). Patches: trim = glibc `malloc_trim(0)` before the workers "
        f"fork; forkserver = workers started from a fresh process.",
        "",
        markdown_table(["data", "images", "workers", "patch", "peak RSS tree (MiB)", "trainer (MiB)", "PSS tree (MiB)",
                        "HWM sum (MiB)", "processes", "items/s", "float32 (MiB)", "load before → after"], mem_rows),
        "",
        f"**Items/s** (32 x 32, {sp['images']:,} PNGs, {sp['train_items']:,} trained on, {sp['steps']} steps; the "
        f"in-memory case is the same images as an .npz of uint8 (N, 32, 32, 3), read into memory: "
        f"{sp['memory_in_memory']}). Medians of {sp['repeats']} repetitions taken in turns; metrics.csv's first row "
        f"left out. Best folder with 2 workers / best in memory: {sp['best_ratio']} (goal ≥ {result['goal_ratio']}: "
        f"{'met' if sp['goal_met'] else 'not met'}); the best the library's folder reaches: {lib['ratio']} "
        f"({lib['case']}, {lib['setting']}). Cases e-h are prototypes (patches in this module, default threads only): "
        f"fast decode (`_fast_get`), workers at nice 10, the folder decoded into memory when built if its uint8 "
        f"images fit under load_npz's in-memory limit ({p['preload_s']} s to decode them in one process).",
        "",
        markdown_table(["case", "trainer threads", "items/s", "samples", "data_wait (ms/step)", "views share",
                        "peak RSS (MiB)", "peak PSS (MiB)", "load"], speed_rows),
        "",
        "Ratios to in memory with the same threads: " + "; ".join(f"{k}: {v}" for k, v in sp["ratios"].items()) + ".",
        "",
        f"**Where the time goes** (this process, {p['threads']} torch threads, batch of {result['batch']}): "
        + ", ".join(f"{k} {v} ms (spread {p['spread'][k]})" for k, v in p["ms_per_batch"].items())
        + "; per image: " + ", ".join(f"{k} {v} µs" for k, v in p["us_per_image"].items())
        + f". Fast and checked decoding and the .npz give the same pixels: {p['same_images']}. Receiving a batch from a "
        f"worker costs the trainer {p['receive_ms_per_batch']} ms of CPU (in-memory loader, 1 worker vs none). Feeding "
        f"the best in-memory speed needs {sp['decode_cores']} cores of decoding: a trainer that used all "
        f"{sp['cores']} cores would keep at most 1 / (1 + that / cores) = {sp['sharing_bound']} of its speed. Loaders "
        f"alone (no training; timed from the first batch):",
        "",
        markdown_table(["loader", "items/s", "wait (ms/batch)", "reader CPU (ms/batch)"], loaders),
    ])


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
