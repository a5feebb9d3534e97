"""Section: exact cosine k-NN search, contrastlab's backends against faiss-cpu and scikit-learn.

Features are Gaussian clusters (10 classes, D = 128); every method returns the k most cosine-similar keys of
each query, and ``recall`` is the share of each method's neighbours that the torch backend also returns
(ties may reorder the last neighbour, so slightly below 1 is still exact).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from benchmarks._common import Config, markdown_table, skipped, time_interleaved

TITLE = "k-NN search (cosine, exact) vs faiss-cpu and scikit-learn"
K = 5


def _features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d)).astype(np.float32)
    x = centres[rng.integers(0, 10, n)] + rng.normal(scale=1.5, size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _methods(keys: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    from contrastlab.evaluation.knn import faiss_available, nearest_neighbours

    out: dict[str, Any] = {"contrastlab torch": lambda: nearest_neighbours(queries, keys, k=K, backend="torch")[1]}
    if faiss_available():
        import faiss

        out["contrastlab faiss"] = lambda: nearest_neighbours(queries, keys, k=K, backend="faiss")[1]

        def raw_faiss():
            index = faiss.IndexFlatIP(keys.shape[1])
            index.add(keys)
            return index.search(queries, K)[1]

        out["faiss IndexFlatIP"] = raw_faiss
    from sklearn.neighbors import NearestNeighbors

    out["scikit-learn brute cosine"] = lambda: NearestNeighbors(n_neighbors=K, algorithm="brute", metric="cosine").fit(
        keys).kneighbors(queries, return_distance=False)
    return out


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.evaluation.knn") is None:
        return skipped(TITLE, "contrastlab.evaluation.knn is missing (evaluation/ not landed yet)")
    n_keys, n_queries, d = (2000, 500, 128) if config.quick else (50000, 10000, 128)
    keys, queries = _features(n_keys, d, 0), _features(n_queries, d, 1)
    methods = _methods(keys, queries)
    log(f"  {n_queries} queries x {n_keys} keys: {', '.join(methods)}")
    results: dict[str, Any] = {}

    def keep(name, fn):
        def call():
            results[name] = np.asarray(torch.as_tensor(fn()))
        return call

    timings = time_interleaved({m: keep(m, fn) for m, fn in methods.items()}, budget_s=config.time_budget_s)
    exact = results["contrastlab torch"]
    rows = []
    for name, timing in timings.items():
        if isinstance(timing, BaseException):
            rows.append({"method": name, "error": str(timing)[:200]})
            continue
        hits = np.mean([len(set(a) & set(b)) / K for a, b in zip(results[name], exact)])
        rows.append({"method": name, "seconds": round(timing["seconds"], 4), "spread": timing["spread"],
                     "queries_per_s": round(n_queries / timing["seconds"], 1),
                     "recall_vs_torch": round(float(hits), 4)})
    return {"title": TITLE, "status": "ok", "keys": n_keys, "queries": n_queries, "dim": d, "k": K, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = f"{result['queries']} queries, {result['keys']} keys, D = {result['dim']}, k = {result['k']}."
    table = [[r["method"], r.get("seconds"), r.get("spread"), r.get("queries_per_s"), r.get("recall_vs_torch")]
             for r in result["rows"]]
    return head + "\n\n" + markdown_table(["method", "seconds", "spread", "queries/s", "recall vs torch"], table)
