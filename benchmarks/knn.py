"""Section: exact cosine k-NN search, contrastlab's built-in blocked search against raw faiss-cpu.

100,000 keys x 10,000 queries, D = 128 (Gaussian clusters, 10 classes), k = 5 (the majority vote) and
k = 200 (Wu et al.'s weighted vote), each with 1 and with 2 threads (``torch.set_num_threads`` for
contrastlab, ``faiss.omp_set_num_threads`` and the BLAS limit for faiss). The two methods take turns
(``a b a b ...``) and each row gives the median wall time, the median process CPU time (steadier on a shared
machine when one thread runs) and ``ratio``: contrastlab's time over faiss's for the same case. ``recall`` is
the share of faiss's neighbours that contrastlab also returns (ties at the k-th neighbour may pick another
index of equal similarity, so slightly below 1 is still exact).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import Config, load_average, markdown_table, skipped, time_interleaved

TITLE = "k-NN search (cosine, exact): built-in blocked search vs faiss-cpu IndexFlatIP"
KS = (5, 200)
THREADS = (1, 2)
OURS, FAISS = "contrastlab torch", "faiss IndexFlatIP"


def _features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(10, d)).astype(np.float32)
    x = centres[rng.integers(0, 10, n)] + rng.normal(scale=1.5, size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _limited(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _case(keys: np.ndarray, queries: np.ndarray, k: int, threads: int, budget_s: float) -> list[dict[str, Any]]:
    import faiss

    from contrastlab.evaluation.knn import nearest_neighbours

    results: dict[str, np.ndarray] = {}
    cpu: dict[str, list[float]] = {OURS: [], FAISS: []}

    def ours():
        return nearest_neighbours(queries, keys, k=k, backend="torch")[1].numpy()

    def raw_faiss():
        with _limited(threads):
            index = faiss.IndexFlatIP(keys.shape[1])
            index.add(keys)
            return index.search(queries, k)[1]

    def timed(name, fn):
        def call():
            start = time.process_time()
            results[name] = fn()
            cpu[name].append(time.process_time() - start)
        return call

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        timings = time_interleaved({OURS: timed(OURS, ours), FAISS: timed(FAISS, raw_faiss)},
                                   budget_s=budget_s, max_repeats=3)
    finally:
        torch.set_num_threads(before)
        faiss.omp_set_num_threads(before)
    reference = results[FAISS]
    rows = []
    for name, timing in timings.items():
        if isinstance(timing, BaseException):
            rows.append({"k": k, "threads": threads, "method": name, "error": str(timing)[:200]})
            continue
        samples = cpu[name][1:] or cpu[name]  # the first call was the warm-up
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(results[name], reference)])
        rows.append({"k": k, "threads": threads, "method": name, "seconds": round(timing["seconds"], 4),
                     "cpu_seconds": round(statistics.median(samples), 4), "spread": timing["spread"],
                     "queries_per_s": round(len(queries) / timing["seconds"], 1),
                     "recall_vs_faiss": round(float(recall), 6), "load_before": timing["load_before"],
                     "load_after": timing["load_after"]})
    ok = {r["method"]: r for r in rows if "seconds" in r}
    if OURS in ok and FAISS in ok:
        ok[OURS]["ratio"] = round(ok[OURS]["seconds"] / ok[FAISS]["seconds"], 3)
        ok[OURS]["cpu_ratio"] = round(ok[OURS]["cpu_seconds"] / ok[FAISS]["cpu_seconds"], 3)
    return rows


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.evaluation.knn") is None:
        return skipped(TITLE, "contrastlab.evaluation.knn is missing (evaluation/ not landed yet)")
    if importlib.util.find_spec("faiss") is None:
        return skipped(TITLE, "faiss-cpu is not installed (pip install faiss-cpu): nothing to compare with")
    n_keys, n_queries, d = (5000, 1000, 128) if config.quick else (100_000, 10_000, 128)
    keys, queries = _features(n_keys, d, 0), _features(n_queries, d, 1)
    rows = []
    for threads in THREADS:
        for k in KS:
            log(f"  {n_queries} queries x {n_keys} keys, k={k}, {threads} thread(s) (load {load_average()})")
            rows += _case(keys, queries, k, threads, config.time_budget_s)
    return {"title": TITLE, "status": "ok", "keys": n_keys, "queries": n_queries, "dim": d, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = (f"{result['queries']} queries, {result['keys']} keys, D = {result['dim']}. `ratio`: contrastlab's "
            "median wall time over faiss's in the same case (`cpu ratio`: the same with process CPU time).")
    keys = ("k", "threads", "method", "seconds", "cpu_seconds", "spread", "queries_per_s", "recall_vs_faiss",
            "ratio", "cpu_ratio", "load_before")
    table = [[r.get(key) for key in keys] for r in result["rows"]]
    return head + "\n\n" + markdown_table(
        ["k", "threads", "method", "seconds", "CPU s", "spread", "queries/s", "recall vs faiss", "ratio",
         "cpu ratio", "load"], table)
