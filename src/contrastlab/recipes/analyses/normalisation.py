r"""The contrastive homework's question 2(a): why the outputs are normalised.

With outputs on the unit sphere or in the unit ball the InfoNCE loss of a batch of :math:`N` pairs cannot
fall below

.. math::
    \mathcal{L}_\text{min}(N, \tau) = \log\Big(1 + (N - 1)\, e^{-\frac{N}{(N - 1)\tau}}\Big),

reached when positives coincide and the :math:`N` embeddings form a regular simplex. (Write the loss as
:math:`\frac1N\sum_i \log(1 + \sum_{j \ne i} e^{(s_{ij} - s_{ii})/\tau})`; :math:`x \mapsto \log(1 + (N-1)e^x)`
is convex, so by Jensen the loss is at least this function of the mean of :math:`s_{ij} - s_{ii}`; and
:math:`\sum_{i,j}(s_{ij} - s_{ii}) = -\frac12 \sum_{i,j} (z^1_i - z^1_j)^\top (z^2_i - z^2_j) \ge -N^2` when every
norm is at most 1, so that mean is at least :math:`-N/(N-1)`.) An unconstrained encoder has no such floor: once
every positive is its anchor's nearest candidate, scaling all outputs by :math:`w > 1` lowers the loss, and
:math:`w \to \infty` drives it to 0, so :math:`f^*_{\mathbb{R}}` does not exist (the infimum is not attained).

The analysis reads each run's ``metrics.csv`` (loss and mean embedding norm over training) and its
evaluation, and checks that the unconstrained loss goes below the floor while its norms keep growing.

References:
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere", ICML 2020; the contrastive homework, question 2 (reference/homework6-contrastive-questions.md).
"""

from __future__ import annotations

import math
from pathlib import Path

from contrastlab.training.build import resolve_output_space
from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.recipes.analyses._metrics import accuracy_row
from contrastlab.recipes.summary import Check, Summary, Table
from contrastlab.training.logging import read_metrics

_SPACES = ("sphere", "ball", "none")
_STYLE = {"sphere": (PALETTE[0], "-"), "ball": (PALETTE[1], "--"), "none": (PALETTE[3], "-")}


def infonce_floor(n: int, temperature: float) -> float:
    r"""The lowest InfoNCE loss (in-batch negatives, one way) of :math:`N` pairs with norms at most 1.

    .. math:: \mathcal{L}_\text{min} = \log\big(1 + (N - 1)\,e^{-N / ((N - 1)\tau)}\big)

    Args:
        n: the batch size :math:`N \ge 2` (candidates per anchor).
        temperature: :math:`\tau > 0`.

    Returns:
        The floor, in nats.

    Raises:
        ValueError: for ``n < 2`` or ``temperature <= 0``.

    Example:
        >>> round(infonce_floor(128, 0.2), 4)
        0.5985
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return math.log1p((n - 1) * math.exp(-n / ((n - 1) * temperature)))


def _info(outcome) -> tuple[str, float | None, int, str]:
    cfg = outcome.config
    objective = cfg.get("objective") or {}
    space = resolve_output_space(cfg.get("model", {}).get("normalize", "auto"), objective.get("name", "info_nce"))
    tau = (objective.get("options") or {}).get("temperature")
    return space, (float(tau) if tau is not None else None), int(cfg.get("batch_size", 256)), objective.get("name", "")


def _floor(outcome) -> float | None:
    space, tau, n, name = _info(outcome)
    if name not in ("info_nce", "clip") or tau is None:
        return None
    return infonce_floor(n, tau)


def _curve(outcome) -> list[dict]:
    path = outcome.run_dir / "metrics.csv"
    return read_metrics(path) if path.is_file() else []


def _half(rows: list[dict], key: str) -> float | None:
    """The value of ``key`` at the logged row closest to half-way through training."""
    if not rows:
        return None
    middle = rows[-1]["step"] / 2
    return min(rows, key=lambda r: abs(r["step"] - middle))[key]


def _curves_figure(runs: dict, path: Path, floor: float | None) -> Path:
    fig = new_figure(9.0, 3.4)
    ax_loss, ax_norm = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, (outcome, rows) in runs.items():
        space = _info(outcome)[0]
        colour, style = _STYLE[space]
        steps = [r["step"] for r in rows]
        label = name if name == space else f"{name} ({space})"
        ax_loss.plot(steps, [max(r["loss"], 1e-6) for r in rows], color=colour, ls=style, label=label)
        ax_norm.plot(steps, [r["norm"] for r in rows], color=colour, ls=style, label=label)
    if floor is not None:
        ax_loss.axhline(floor, color="#555555", lw=0.9, ls=":", label="floor on the sphere / in the ball")
    ax_loss.set_yscale("log")
    ax_loss.set_title("Training loss (log scale)", fontsize=10)
    ax_norm.set_title("Mean embedding norm", fontsize=10)
    for ax in (ax_loss, ax_norm):
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, path)


def _sweep_figure(groups: dict[str, list], path: Path) -> Path:
    fig = new_figure(9.0, 3.4)
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    taus = sorted({tau for rows in groups.values() for tau, *_ in rows})
    n = next(_info(o)[2] for rows in groups.values() for *_, o in rows)
    ax_loss.plot(taus, [infonce_floor(n, t) for t in taus], color="#555555", ls=":", marker=".",
                 label="floor on the sphere / in the ball")
    for space, rows in groups.items():
        colour, style = _STYLE[space]
        ax_loss.plot([r[0] for r in rows], [r[1] for r in rows], color=colour, ls=style, marker="o", label=space)
        ax_acc.plot([r[0] for r in rows], [r[2] for r in rows], color=colour, ls=style, marker="o", label=space)
    ax_loss.set_yscale("log")
    low = min(r[1] for rows in groups.values() for r in rows)
    ax_loss.set_ylim(bottom=max(low / 10, 1e-4))  # smaller floors fall off the bottom of the plot
    ax_loss.set_title("Final training loss against the temperature", fontsize=10)
    ax_acc.set_title("Linear accuracy (output) against the temperature", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.set_xscale("log")
        ax.set_xlabel("temperature τ", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, path)


def summarize(recipe, outcomes: dict, out_dir: Path) -> Summary:
    """Tables, figures and checks of the normalisation recipe (see the module docstring).

    Args:
        recipe: the recipe (its base temperature picks the runs compared over training).
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`.
        out_dir: the recipe folder (figures are written there).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    base_tau = ((recipe.base.get("objective") or {}).get("options") or {}).get("temperature")
    curves = {name: (o, _curve(o)) for name, o in outcomes.items()}
    main = {name: c for name, c in curves.items() if c[1] and _info(c[0])[1] == base_tau}
    columns = ["run", "output space", "τ", "first loss", "final loss", "floor (norm ≤ 1)", "first norm",
               "final norm", "output + linear", "backbone + linear", "L_align", "L_uniform"]
    rows = []
    for name, (o, log) in main.items():
        space, tau, _, _ = _info(o)
        head, backbone = accuracy_row(o, "head"), accuracy_row(o, "backbone")
        rows.append([name, space, tau, log[0]["loss"], log[-1]["loss"], _floor(o), log[0]["norm"], log[-1]["norm"],
                     head["linear"], backbone["linear"], head["alignment"], head["uniformity"]])
    summary.tables.append(Table(
        "Sphere, ball and unconstrained outputs, same loss and temperature", columns, rows,
        note="Losses are the mean over the first and the last logging interval; norms are the mean L2 norm of the "
             "embeddings the loss saw. The floor is the lowest loss any encoder with norms at most 1 can reach "
             "with this batch size and temperature. Alignment and uniformity are measured after L2 normalisation."))
    if main:
        floor = _floor(next(iter(main.values()))[0])
        _curves_figure(main, out_dir / "normalisation_curves.png", floor)
        summary.figures["Loss and mean embedding norm over training: sphere, ball, unconstrained"] = \
            "normalisation_curves.png"

    groups: dict[str, list] = {}
    for name, (o, log) in curves.items():
        space, tau, _, _ = _info(o)
        if log and tau is not None:
            groups.setdefault(space, []).append((tau, log[-1]["loss"], accuracy_row(o, "head")["linear"], name, o))
    for rows_ in groups.values():
        rows_.sort(key=lambda r: r[0])
    swept = {s: r for s, r in groups.items() if len(r) > 1}
    if swept:
        table_rows = []
        for space in _SPACES:
            for tau, loss, acc, name, o in swept.get(space, []):
                head = accuracy_row(o, "head")
                table_rows.append([name, space, tau, loss, _floor(o), _curve(o)[-1]["norm"], acc, head["knn5"],
                                   head["alignment"], head["uniformity"]])
        summary.tables.append(Table(
            "Temperature sweep", ["run", "output space", "τ", "final loss", "floor (norm ≤ 1)", "final norm",
                                  "output + linear", "output + 5-NN", "L_align", "L_uniform"], table_rows))
        _sweep_figure(swept, out_dir / "normalisation_temperature.png")
        summary.figures["Final loss and accuracy against the temperature"] = "normalisation_temperature.png"

    _checks(main, summary)
    if outcomes:
        raw = accuracy_row(next(iter(outcomes.values())), "raw")
        if raw["linear"] is not None:
            summary.findings.append(f"Baseline: raw pixels reach {raw['linear']:.3f} linear and {raw['knn5']:.3f} "
                                    "5-NN accuracy on the same items.")
    for space, what in (("sphere", "on the sphere"), ("none", "unconstrained")):
        if space in swept:
            losses = [r[1] for r in swept[space]]
            summary.findings.append(
                f"Final losses {what} over τ = {', '.join(f'{r[0]:g}' for r in swept[space])}: "
                f"{', '.join(f'{v:.3g}' for v in losses)}.")
    by_space = {_info(o)[0]: log for o, log in main.values()}
    if "ball" in by_space and "none" in by_space:
        ball = [r["norm"] for r in by_space["ball"]]
        start = f"The head's unconstrained outputs start with mean norm {by_space['none'][0]['norm']:.3g}"
        if min(ball) > 0.999:
            summary.findings.append(
                f"{start}, outside the unit ball, so the ball's projection is active from the first step and the "
                "ball run follows the sphere run; the loss rewards larger norms once positives are ranked first, "
                "so the ball's optimum lies on its boundary, the sphere, anyway.")
        else:
            summary.findings.append(f"{start}; in the ball the mean norm went from {ball[0]:.3g} to {ball[-1]:.3g} "
                                    f"(lowest {min(ball):.3g}).")
    if "none" in swept:
        summary.findings.append(
            "Unconstrained, only the product of the squared norm and 1/τ reaches the loss (s_ij / τ = "
            "|z_i| |z_j| cos θ_ij / τ), so the encoder can undo any temperature by rescaling itself; on the "
            "sphere it cannot, and τ sets the floor.")
    return summary


def _checks(main: dict, summary: Summary) -> None:
    by_space = {_info(o)[0]: (name, o, log) for name, (o, log) in main.items()}
    if "none" in by_space:
        name, o, log = by_space["none"]
        norms = [r["norm"] for r in log]
        first, low, half, last = norms[0], min(norms), _half(log, "norm"), norms[-1]
        summary.checks.append(Check(
            "unconstrained: the mean embedding norm keeps growing through the second half of training (no bound "
            "in sight)", last > half, f"norm {first:.3g} at the start, lowest {low:.3g}, {half:.3g} half-way, "
                                      f"{last:.3g} at the end"))
        loss_half, loss_last = _half(log, "loss"), log[-1]["loss"]
        summary.checks.append(Check(
            "unconstrained: the loss keeps falling towards 0", loss_last < loss_half,
            f"loss {loss_half:.3g} half-way, {loss_last:.3g} at the end"))
        floor = _floor(o)
        if floor is not None:
            summary.checks.append(Check(
                "unconstrained: the loss goes below the lowest loss any encoder on the sphere or in the ball can "
                "reach", loss_last < floor, f"final loss {loss_last:.3g}, floor {floor:.3g}"))
    for space, bound in (("sphere", "equals"), ("ball", "stays at most")):
        if space in by_space:
            log = by_space[space][2]
            norms = [r["norm"] for r in log]
            ok = all(abs(n - 1) < 1e-3 for n in norms) if space == "sphere" else max(norms) <= 1 + 1e-4
            summary.checks.append(Check(f"{space}: the mean norm {bound} 1 and the loss stays above its floor",
                                        ok and log[-1]["loss"] >= (_floor(by_space[space][1]) or 0.0) - 1e-6,
                                        f"norms in [{min(norms):.4f}, {max(norms):.4f}], final loss "
                                        f"{log[-1]['loss']:.3g}"))
    if "sphere" in by_space and "none" in by_space:
        s, u = by_space["sphere"][2][-1]["loss"], by_space["none"][2][-1]["loss"]
        summary.checks.append(Check("the unconstrained loss ends lower than the sphere's", u < s,
                                    f"{u:.3g} vs {s:.3g}"))
