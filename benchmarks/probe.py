"""Section: linear probe fitting, contrastlab's L-BFGS :class:`LinearProbe` against scikit-learn.

Both fit the same multinomial logistic regression (C = 1) on standardised Gaussian-cluster features
(10 classes, D = 128); the table gives fit time, test accuracy and how often the two predict the same class.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from benchmarks._common import Config, markdown_table, skipped, time_interleaved

TITLE = "Linear probe fit vs scikit-learn LogisticRegression"


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(scale=0.3, size=(10, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return (centres[y] + rng.normal(size=(n, d)).astype(np.float32)), y


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.evaluation.probe") is None:
        return skipped(TITLE, "contrastlab.evaluation.probe is missing (evaluation/ not landed yet)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from contrastlab.evaluation.probe import LinearProbe

    n_train, n_test, d = (500, 200, 128) if config.quick else (10000, 2000, 128)
    x_train, y_train = _data(n_train, d, 1)
    x_test, y_test = _data(n_test, d, 2)
    models = {
        "contrastlab LinearProbe (L-BFGS)": lambda: LinearProbe(C=1.0, max_iter=1000),
        "scikit-learn LogisticRegression (lbfgs)": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)),
    }
    fitted: dict[str, Any] = {}

    def fit(name):
        def call():
            fitted[name] = models[name]().fit(x_train, y_train)
        return call

    log(f"  {n_train} x {d}, 10 classes: {', '.join(models)}")
    timings = time_interleaved({m: fit(m) for m in models}, budget_s=config.time_budget_s)
    predictions = {m: np.asarray(f.predict(x_test)) for m, f in fitted.items()}
    reference = predictions["scikit-learn LogisticRegression (lbfgs)"]
    rows = []
    for name, timing in timings.items():
        if isinstance(timing, BaseException):
            rows.append({"method": name, "error": str(timing)[:200]})
            continue
        rows.append({"method": name, "fit_seconds": round(timing["seconds"], 4), "spread": timing["spread"],
                     "test_accuracy": round(float(np.mean(predictions[name] == y_test)), 4),
                     "agreement_with_sklearn": round(float(np.mean(predictions[name] == reference)), 4)})
    return {"title": TITLE, "status": "ok", "train": n_train, "test": n_test, "dim": d, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = f"{result['train']} training and {result['test']} test items, D = {result['dim']}, 10 classes, C = 1."
    keys = ("method", "fit_seconds", "spread", "test_accuracy", "agreement_with_sklearn")
    table = [[r.get(k) for k in keys] for r in result["rows"]]
    return head + "\n\n" + markdown_table(["method", "fit s", "spread", "test accuracy", "same prediction"], table)
