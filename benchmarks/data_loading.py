r"""Section: training from image files through loader workers, against the same images held in memory.

Every training run is a fresh ``python -m contrastlab train`` process (SimCLR views, the small conv net, NT-Xent
tau = 0.2, batch 256, no checkpoints but the last, a ``metrics.csv`` row every 10 steps). The images are generated
PNGs of smooth colour noise plus grain (bicubic upscaling of random colours on a 1/8-size grid, Gaussian grain
sigma 6: about 2.3 KB at 32 x 32 and 8.8 KB at 64 x 64, like small photos stored as PNG), written by 2 processes
into a temporary folder under ``$TMPDIR`` that is deleted at the end. Data sets hold 99% of the images
(``test_fraction: 0.01``).

1. **Peak memory, flat in the number of images** (64 x 64, 10,000 and 60,000 files, 2 workers). A sampling thread
   reads ``VmRSS`` from ``/proc/<pid>/status`` for the trainer and every descendant (loader workers) every 50 ms and
   keeps the largest sum (``peak_rss``: what the issue limits; pages shared between the trainer and its forked
   workers count once per process) and the trainer's own peak; ``Pss`` from ``/proc/<pid>/smaps_rollup`` (shared
   pages divided among their users, so the sum is the tree's real footprint) is summed every 0.5 s. The old way
   (every image decoded into one float32 tensor) is the arithmetic N x 3 x 64 x 64 x 4 bytes.
2. **Items/s** (32 x 32, 10,000 files): (a) the folder with 2 workers, (b) the same images as an ``.npz`` of uint8
   (N, 32, 32, 3) -- :func:`~contrastlab.data.arrays.load_npz` reads arrays under 64 MiB into memory, so this is
   an in-memory data set without workers -- (c) the folder with 0 workers and (d) with 1 worker; each with the
   default torch threads and with ``threads: 1``, repeated in turns. items/s and data_wait (mean seconds a step
   waited for its batch) come from ``metrics.csv`` without its first row (warm-up).
3. **Where the time goes**, in this process: decoding a batch (:meth:`ImageFolder.get`, and Pillow alone), the
   in-memory ``get``, the views, and each loader alone (no training) through :class:`~contrastlab.data.loading.
   Batches`; a CPU-sharing model (trainer and workers share the cores: ``ratio = L / (L + T)`` with ``T`` the
   in-memory trainer's items/s and ``L`` the 2-worker loader's items/s alone) says what ratio decoding allows.
   Prototypes of fixes run as ``python -m benchmarks.data_loading PATCH CONFIG OUT``: the trainer with a patch
   applied (nothing under ``src/`` is changed).
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

from benchmarks._common import GIB, MIB, ROOT, Config, load_average, markdown_table, skipped

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

    def __init__(self, pid: int, *, interval: float = 0.05, rescan: float = 0.5) -> None:
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


def train_config(data: dict[str, Any], *, steps: int, threads: int | None, every: int = 10,
                 workers: int | None = None, pool: str = "flatten") -> dict[str, Any]:
    """A SimCLR recipe on ``data`` (``{"name": ..., "options": ...}``) with ``workers`` loader processes; ``pool``
    is the conv net's (``"avg"`` keeps its head small at 64 x 64, where flattening gives 4,096 features)."""
    return {
        "data": {**data, "num_workers": workers},
        "views": {"name": "simclr"},
        "objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
        "model": {"encoder": {"name": "convnet", "options": {"pool": pool}}, "dim": 64},
        "batch_size": BATCH,
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
    seconds = sum(s * BATCH / r["items_per_s"] for s, r in kept)
    return {"items_per_s": round(sum(s for s, _ in kept) * BATCH / seconds, 1),
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


PATCHES: dict[str, Callable[[], None]] = {"fast_decode": _patch_fast_decode, "trim": _patch_trim,
                                          "forkserver": _patch_forkserver}


def _driver(argv: list[str]) -> int:
    """``python -m benchmarks.data_loading PATCH[+PATCH...] CONFIG OUT``: train with prototype patches applied."""
    patches, cfg, out = argv
    for name in patches.split("+"):
        PATCHES[name]()
    from contrastlab.cli import main

    return main(["train", cfg, "--out", out, "--overwrite"])


# ----------------------------------------------------------------------------------- where the time goes


def _per_call(fn: Callable[[], Any], *, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def loader_alone(dataset, *, workers: int, steps: int) -> dict[str, float]:
    """Items/s of reading ``steps`` batches through :class:`Batches` with ``workers`` workers, nothing else
    (worker start-up included), and the reading process's CPU time per batch."""
    import torch

    from contrastlab.data.loading import Batches, LoaderOptions
    from contrastlab.training.sampler import ShardedBatches

    sampler = ShardedBatches(len(dataset), BATCH, seed=0)
    batches = Batches(dataset, sampler, 0, steps, options=LoaderOptions(num_workers=workers),
                      device=torch.device("cpu"), seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    waits = [batches.wait for _ in batches]
    seconds = time.perf_counter() - t0
    return {"items_per_s": round(steps * BATCH / seconds, 1),
            "main_cpu_ms_per_batch": round(1e3 * (time.process_time() - c0) / steps, 2),
            "wait_ms": round(1e3 * statistics.mean(waits[1:] or waits), 2)}


def where_time_goes(folder, memory, *, repeats: int, loader_steps: int) -> dict[str, Any]:
    """Per-batch costs in this process (one thread decodes; the views use torch's threads)."""
    import torch
    from PIL import Image

    from contrastlab.data.base import to_device
    from contrastlab.views.simclr import SimCLRViews

    index = torch.arange(BATCH)
    paths = [os.path.join(folder.root, folder.files[i]) for i in range(BATCH)]

    def pillow_alone():
        for p in paths:
            with Image.open(p) as img:
                np.asarray(img)

    fast = _fast_get.__get__(folder)
    same = bool(torch.equal(fast(index).inputs["image"], folder.get(index).inputs["image"])
                and torch.equal(memory.get(index).inputs["image"], folder.get(index).inputs["image"]))
    views = SimCLRViews(memory)
    batch = memory.get(index)
    rng = torch.Generator().manual_seed(0)
    ms = {
        "folder_get": _per_call(lambda: folder.get(index), repeats=repeats),
        "folder_get_fast": _per_call(lambda: fast(index), repeats=repeats),
        "pillow_alone": _per_call(pillow_alone, repeats=repeats),
        "memory_get": _per_call(lambda: memory.get(index), repeats=repeats),
        "to_device_and_views": _per_call(lambda: views(to_device(batch, "cpu"), rng), repeats=repeats),
    }
    loaders = {f"{kind}_w{w}": loader_alone(ds, workers=w, steps=loader_steps)
               for kind, ds in (("folder", folder), ("memory", memory)) for w in (0, 1, 2)}
    return {"ms_per_batch": {k: round(1e3 * v, 2) for k, v in ms.items()},
            "us_per_image": {k: round(1e6 * ms[k] / BATCH, 1) for k in ("folder_get", "folder_get_fast", "pillow_alone")},
            "same_images": same, "loader_alone": loaders, "threads": torch.get_num_threads(),
            "load_after": load_average()}


# ----------------------------------------------------------------------------------------------- the section


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"memory_ns": (300, 600), "memory_steps": 3, "speed_n": 600, "speed_steps": 4, "every": 2,
                "repeats": 1, "thread_options": (None,), "profile_repeats": 2, "loader_steps": 4}
    return {"memory_ns": (10_000, 60_000), "memory_steps": 40, "speed_n": 10_000, "speed_steps": 60, "every": 10,
            "repeats": 2, "thread_options": (None, 1), "profile_repeats": 8, "loader_steps": 30}


def _memory_part(work: Path, s: dict[str, Any], log) -> dict[str, Any]:
    small, large = s["memory_ns"]
    t0 = time.perf_counter()
    disk = generate_images(work / f"png64_{large}", large, 64, seed=1)
    link_first(work / f"png64_{large}", work / f"png64_{small}", small)
    log(f"  wrote {large:,} PNGs of 64 x 64 ({disk / MIB:.0f} MiB) in {time.perf_counter() - t0:.0f} s; "
        f"load {load_average()}")
    rows = []
    for n, workers in ((small, 2), (large, 2), (large, 0)):
        data = {"name": "image_folder", "options": {"root": str(work / f"png64_{n}"), "labels": "none",
                                                    "test_fraction": TEST_FRACTION}}
        cfg = train_config(data, steps=s["memory_steps"], threads=None, every=s["every"], workers=workers)
        row = {"images": n, "workers": workers, **train_run(cfg, work, f"mem_{n}_w{workers}")}
        row["float32_gib"] = round(n * 3 * 64 * 64 * 4 / GIB, 2)
        rows.append(row)
        log(f"  {n:,} images, {workers} workers: peak RSS {row['peak_rss_mib']:.0f} MiB (trainer "
            f"{row['peak_main_mib']:.0f}, PSS {row['peak_pss_mib']:.0f}, {row['processes']} processes); "
            f"{row['items_per_s']:.0f} items/s; load {row['load_after']}")
    shutil.rmtree(work / f"png64_{small}")
    shutil.rmtree(work / f"png64_{large}")
    two = [r for r in rows if r["workers"] == 2]
    return {"png_mib": round(disk / MIB, 1), "rows": rows,
            "growth_mib": round(two[-1]["peak_rss_mib"] - two[0]["peak_rss_mib"], 1),
            "goal_met": all(r["peak_rss_mib"] < GOAL_RSS_GIB * 1024 for r in two)}


def _speed_part(work: Path, s: dict[str, Any], log) -> dict[str, Any]:
    from contrastlab.data.arrays import load_npz
    from contrastlab.data.user import load_image_folder

    n = s["speed_n"]
    folder_root, npz = work / f"png32_{n}", work / f"png32_{n}.npz"
    generate_images(folder_root, n, 32, seed=2)
    write_npz(folder_root, n, npz)
    folder_data = {"name": "image_folder", "options": {"root": str(folder_root), "labels": "none",
                                                       "test_fraction": TEST_FRACTION}}
    npz_data = {"name": "npz", "options": {"path": str(npz), "y": None, "test_fraction": TEST_FRACTION}}
    memory_ds = load_npz(path=str(npz), y=None, test_fraction=TEST_FRACTION)
    folder_ds = load_image_folder(root=str(folder_root), labels="none", test_fraction=TEST_FRACTION)
    cases = {  # name: (data, workers, patch)
        "a_folder_w2": (folder_data, 2, None),
        "b_memory": (npz_data, None, None),
        "c_folder_w0": (folder_data, 0, None),
        "d_folder_w1": (folder_data, 1, None),
        "e_folder_w2_fast_decode": (folder_data, 2, "fast_decode"),
        "f_folder_w1_fast_decode": (folder_data, 1, "fast_decode"),
    }
    runs: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for rep in range(s["repeats"]):
        for threads in s["thread_options"]:
            for case, (data, workers, patch) in cases.items():
                cfg = train_config(data, steps=s["speed_steps"], threads=threads, every=s["every"], workers=workers)
                r = train_run(cfg, work, f"{case}_t{threads}_{rep}", patch=patch)
                runs.setdefault((case, threads), []).append(r)
                log(f"  {case}, threads {threads or 'default'}, repetition {rep + 1}: {r['items_per_s']:.0f} items/s, "
                    f"data_wait {r['data_wait_ms']:.1f} ms; load {r['load_after']}")
    rows = []
    for (case, threads), rs in runs.items():
        rows.append({"case": case, "threads": threads, "workers": cases[case][1],
                     "items_per_s": round(statistics.median(r["items_per_s"] for r in rs), 1),
                     "samples": [r["items_per_s"] for r in rs],
                     "data_wait_ms": round(statistics.median(r["data_wait_ms"] for r in rs), 2),
                     "view_fraction": round(statistics.median(r["view_fraction"] for r in rs), 3),
                     "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                     "load": [r["load_before"] for r in rs] + [rs[-1]["load_after"]]})
    by = {(r["case"], r["threads"]): r for r in rows}
    ratios = {f"{case}_t{t or 'default'}": round(by[(case, t)]["items_per_s"] / by[("b_memory", t)]["items_per_s"], 3)
              for (case, t) in by if case != "b_memory"}
    best_memory = max(r["items_per_s"] for r in rows if r["case"] == "b_memory")
    best_folder = max(r["items_per_s"] for r in rows if r["case"] == "a_folder_w2")
    log("  profiling ...")
    profile = where_time_goes(folder_ds, memory_ds, repeats=s["profile_repeats"], loader_steps=s["loader_steps"])
    trainer = best_memory
    loader = profile["loader_alone"]["folder_w2"]["items_per_s"]
    shutil.rmtree(folder_root)
    npz.unlink()
    return {"images": n, "train_items": len(folder_ds), "memory_in_memory": bool(memory_ds.in_memory),
            "rows": rows, "ratios_to_memory_same_threads": ratios,
            "best_ratio": round(best_folder / best_memory, 3), "goal_met": best_folder / best_memory >= GOAL_RATIO,
            "profile": profile, "sharing_model_ratio": round(loader / (loader + trainer), 3)}


def run(config: Config, log=print) -> dict[str, Any]:
    try:
        from contrastlab.data.loading import Batches  # noqa: F401
        from contrastlab.data.user import ImageFolder  # noqa: F401
    except ImportError as err:
        return skipped(TITLE, f"contrastlab's on-demand image loading does not import: {err}")
    if not Path("/proc/self/status").is_file():
        return skipped(TITLE, "needs /proc to sample the memory of a process tree")
    s = _sizes(config.quick)
    need = 1.2 * max(s["memory_ns"]) * 9 * 1024
    work = Path(tempfile.mkdtemp(prefix="contrastlab_dl_"))
    try:
        free = shutil.disk_usage(work).free
        if free < need:
            return skipped(TITLE, f"needs about {need / GIB:.1f} GiB free under {work.parent}, has {free / GIB:.1f}")
        memory = _memory_part(work, s, log)
        speed = _speed_part(work, s, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"title": TITLE, "status": "ok", "batch": BATCH, "test_fraction": TEST_FRACTION,
            "rss_method": "sum of VmRSS over /proc/<pid>/status of the trainer and its descendants, every 50 ms",
            "goal_rss_gib": GOAL_RSS_GIB, "goal_ratio": GOAL_RATIO, "memory": memory, "speed": speed,
            "goal_met": memory["goal_met"] and speed["goal_met"]}


def markdown(result: dict[str, Any]) -> str:
    m, sp = result["memory"], result["speed"]
    mem_rows = [[r["images"], r["workers"], r["peak_rss_mib"], r["peak_main_mib"], r["peak_pss_mib"], r["hwm_sum_mib"],
                 r["processes"], r["items_per_s"], r["float32_gib"] * 1024, f"{r['load_before']} → {r['load_after']}"]
                for r in m["rows"]]
    speed_rows = [[r["case"], r["threads"] or "default", r["workers"] if r["workers"] is not None else "—",
                   r["items_per_s"], ", ".join(f"{v:.0f}" for v in r["samples"]), r["data_wait_ms"],
                   r["view_fraction"], r["peak_rss_mib"], " → ".join(str(v) for v in r["load"])] for r in sp["rows"]]
    p = sp["profile"]
    loaders = [[k, v["items_per_s"], v["wait_ms"], v["main_cpu_ms_per_batch"]] for k, v in p["loader_alone"].items()]
    rss_met = "met" if m["goal_met"] else "not met"
    ratio_met = "met" if sp["goal_met"] else "not met"
    return "\n".join([
        f"Fresh `python -m contrastlab train` processes, SimCLR views, conv net, batch {result['batch']}; generated "
        f"PNGs (smooth colour noise + grain), {1 - result['test_fraction']:.0%} of them in the training split. Memory: "
        f"{result['rss_method']}; PSS summed every 0.5 s; 'HWM sum' adds each process's own peak (an upper bound).",
        "",
        f"**Peak memory** (64 x 64, {m['png_mib']:.0f} MiB of PNGs for the largest set). Goal < "
        f"{result['goal_rss_gib']} GiB with 2 workers, flat in the number of images: {rss_met}; growth from the "
        f"smallest to the largest set {m['growth_mib']} MiB. 'float32 in memory' is what the old way held for the "
        f"decoded images alone (N x 3 x 64 x 64 x 4 bytes).",
        "",
        markdown_table(["images", "workers", "peak RSS tree (MiB)", "trainer (MiB)", "PSS tree (MiB)", "HWM sum (MiB)",
                        "processes", "items/s", "float32 in memory (MiB)", "load before → after"], mem_rows),
        "",
        f"**Items/s** (32 x 32, {sp['images']:,} PNGs, {sp['train_items']:,} trained on; the in-memory case is the "
        f"same images as an .npz of uint8, held in memory: {sp['memory_in_memory']}). Median over repetitions taken "
        f"in turns; metrics.csv's first row left out. Best folder-with-2-workers / best in-memory: "
        f"{sp['best_ratio']} (goal ≥ {result['goal_ratio']}: {ratio_met}); CPU-sharing model L / (L + T): "
        f"{sp['sharing_model_ratio']}. 'fast_decode' is a prototype (this module's `_fast_get`), not the library.",
        "",
        markdown_table(["case", "threads", "workers", "items/s", "samples", "data_wait (ms/step)", "views share",
                        "peak RSS (MiB)", "load"], speed_rows),
        "",
        "Ratios to in-memory at the same threads: " + ", ".join(f"{k} {v}" for k, v in
                                                               sp["ratios_to_memory_same_threads"].items()) + ".",
        "",
        f"**Where the time goes** (this process, {p['threads']} torch threads; batch of {result['batch']}): "
        + ", ".join(f"{k} {v} ms" for k, v in p["ms_per_batch"].items())
        + "; per image: " + ", ".join(f"{k} {v} µs" for k, v in p["us_per_image"].items())
        + f"; fast and checked decoding and the .npz give the same pixels: {p['same_images']}. Loaders alone "
        "(no training; worker start-up included):",
        "",
        markdown_table(["loader", "items/s", "wait (ms/batch)", "reader CPU (ms/batch)"], loaders),
    ])


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
