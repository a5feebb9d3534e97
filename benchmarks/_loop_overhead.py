"""What train() does per step that a bare loop does not, item by item, in microseconds.

    python -m benchmarks._loop_overhead [--case simclr|byol] [--batch 256] [--threads 1]

Builds the pieces as train() does (same config as ``benchmarks/training.py``) and times each piece of
host-side work of ``contrastlab.training.loop._Run._loop`` and ``LossModule.forward`` that the bare loop
of ``benchmarks/training.py`` does not do, with ``timeit`` (best of 7 repeats: an overhead estimate, the
least disturbed by other processes). Items done every ``log.every`` steps and once per run are given per
occurrence and amortised per step. Not a section of ``benchmarks.run``: a diagnostic, it reads private
names of the loop and may need updating when the loop changes.
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import torch


def best_us(fn, *, number: int | None = None, repeat: int = 7) -> float:
    """The best per-call time of ``fn`` in microseconds."""
    timer = timeit.Timer(fn)
    if number is None:
        number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    from benchmarks.training import config_dict
    from contrastlab.encoders.momentum import momentum_at
    from contrastlab.training import config_from_dict
    from contrastlab.training.build import build_components
    from contrastlab.training.checkpoint import CheckpointManager
    from contrastlab.training.logging import Window
    from contrastlab.training.loop import _Logs, _Run, step_inputs
    from contrastlab.training.optim import build_optimizer, lr_factor, set_lr
    from contrastlab.training.sampler import ShardedBatches, derive_seed
    from contrastlab.training.step import _gathered, mean_norm
    from contrastlab.training.monitors import batch_geometry
    from contrastlab.training import distributed

    p = argparse.ArgumentParser(prog="python -m benchmarks._loop_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("simclr", "byol"), default="simclr")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=60, help="run length, to amortise the once-per-run items")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = config_from_dict(config_dict(args.case, steps=args.steps, batch=args.batch, threads=args.threads))
    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    comps = build_components(cfg)
    module = comps.loss_module()
    model = module.model
    o = cfg.optim
    optimizer = build_optimizer(o.name, [module], lr=o.lr, weight_decay=o.weight_decay, betas=o.betas,
                                exclude_bias_and_norm=o.exclude_bias_and_norm)
    plain = torch.optim.AdamW([q for q in module.parameters() if q.requires_grad], lr=o.lr)
    sampler = ShardedBatches(len(comps.dataset), cfg.batch_size, seed=cfg.seed)
    rng = torch.Generator().manual_seed(derive_seed(cfg.seed, 0, 1))
    idx = sampler.indices(0)
    batch = comps.dataset.get(idx)
    views = comps.views(batch, rng)
    inputs = step_inputs(comps, batch, idx, views, device)
    loss, out = module(**inputs)
    loss.backward()
    plain.step()
    optimizer.step()
    names = list(out.embeddings)
    local = model.outputs({v: views[v] for v in module.view_names}, None, modalities=module.modalities,
                          global_views=module.global_views)
    local.labels, local.index = inputs["labels"], inputs["index"]
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=False)
    rows: list[tuple[str, str, float, float]] = []  # (item, how often, us per occurrence, us per step)
    notes: list[str] = []  # timed for scale, but the bare loop does the same work

    def per_step(name: str, fn) -> None:
        us = best_us(fn)
        rows.append((name, "every step", us, us))

    def per_log(name: str, fn) -> None:
        us = best_us(fn)
        rows.append((name, f"every {cfg.log.every} steps", us, us / cfg.log.every))

    # --- every step, in _Run._loop
    per_step("sampler.indices(step)", lambda: sampler.indices(3))
    per_step("step_inputs (dicts, .to(device) no-ops, labels, index)", lambda: step_inputs(comps, batch, idx, views, device))
    per_step("lr_factor + set_lr", lambda: set_lr(optimizer, cfg.optim.lr * lr_factor(
        3, total_steps=60, warmup_steps=0, schedule=cfg.schedule.name, min_ratio=cfg.schedule.min_lr_ratio)))
    def ctx():
        with torch.autocast(**autocast):
            pass
    per_step("torch.autocast(enabled=False) enter + exit (loop)", ctx)
    w1, w2 = Window(device), Window(device)
    d = loss.detach()
    per_step("Window.add x 2 (window, since_ckpt): ~9 tensor ops each",
             lambda: (w1.add(d, 3, 0.1, 0.2), w2.add(d, 3, 0.0, 0.0)))
    logs = _Logs(Path(tempfile.mkdtemp()), enabled=True, resume_step=None, total=60, progress=False, tensorboard=False)
    clock = timeit.default_timer
    per_step("logs.tick + loop bookkeeping (perf_counter x 3, modulo tests)",
             lambda: (logs.tick(), clock(), clock(), clock()))
    notes.append(f"module.after_step (all hooks): {best_us(lambda: module.after_step(3, 60)):.1f} us")
    # --- every step, in LossModule.forward beyond model(views) + objective(z1, z2)
    per_step("Outputs(...) construction (dataclass + __post_init__)", lambda: type(local)(
        embeddings=local.embeddings, view_names=local.view_names, modalities=local.modalities,
        global_views=local.global_views))
    per_step("_gathered: _to_full + 2 x Outputs.replace + world() x 5", lambda: _gathered(local))
    per_step("distributed.world() (one call)", distributed.world)
    first = lambda *a, **_: a[0]  # noqa: E731 - an objective that costs nothing: what is left is the reader's
    per_step("reader.call overhead (_pairs/_method, _extras, out.pairs())", lambda: module.reader.call(first, local))
    per_step("Outputs.pairs() (itertools.combinations)", local.pairs)
    def inner():
        with torch.autocast("cpu", enabled=False):
            pass
    per_step("torch.autocast(enabled=False) enter + exit (LossModule)", inner)
    if model.targets is not None:  # embeddings BYOL does not read (the log row's statistics use them)
        from contrastlab.encoders.model import to_output_space

        raw = {v: torch.randn_like(z) for v, z in out.embeddings.items()}
        per_step("embeddings of every view, normalised (BYOL reads none; only log rows use them)",
                 lambda: {v: to_output_space(z, model.output_space) for v, z in raw.items()})
    # --- optimiser: two parameter groups (build_optimizer) vs one, timed in turns
    two, one = [], []
    for _ in range(30):
        two.append(best_us(optimizer.step, number=1, repeat=1))
        one.append(best_us(plain.step, number=1, repeat=1))
    notes.append(f"AdamW.step: build_optimizer's 2 groups {min(two):.0f} us, 1 group {min(one):.0f} us "
                 f"(best of 30 in turns; medians {sorted(two)[15]:.0f} / {sorted(one)[15]:.0f} us)")
    optimizer.zero_grad(set_to_none=False)
    if model.targets is not None:
        t_hook = best_us(lambda: model.targets.update(model.towers, step=3, total=60))
        tp, op_ = list(model.targets.towers.parameters()), list(model.towers.parameters())
        tb, ob = list(model.targets.towers.buffers()), list(model.towers.buffers())

        @torch.no_grad()
        def foreach():
            torch._foreach_lerp_(tp, op_, 1.0 - momentum_at(0.99, 3, 60))
            torch._foreach_copy_(tb, ob)
        t_each = best_us(foreach)
        rows.append((f"EMA hook (per-tensor lerp_ over {len(tp)} params + copy_ {len(tb)} buffers) minus "
                     f"_foreach_lerp_/_foreach_copy_ ({t_hook:.0f} vs {t_each:.0f} us)", "every step", t_hook - t_each,
                     t_hook - t_each))
    # --- every log.every steps
    run = _Run(cfg, Path(tempfile.mkdtemp()), distributed.detect(), device)
    per_log("_check_finite (clone + int: one host read)", lambda: run._check_finite(w1, 60, None))
    z = out.embeddings
    per_log("batch_geometry (align + uniform, float64)", lambda: batch_geometry(z))
    per_log("mean_norm", lambda: mean_norm(out.embeddings))
    per_log("window.loss + items_per_s + view_fraction", lambda: (w1.loss(False), w1.items_per_s(256), w1.view_fraction()))
    row = {"step": 10, "epoch": 0, "loss": 1.0, "lr": 1e-3, "align": 0.1, "uniform": -3.0, "norm": 1.0,
           "items_per_s": 900.0, "view_fraction": 0.1, "elapsed_s": 3.0}
    per_log("logs.write (csv row + flush)", lambda: logs.write(10, row))
    per_log("Window(device) x 1 (zeros + full)", lambda: Window(device))
    # --- once per run
    tmp = Path(tempfile.mkdtemp())
    manager = CheckpointManager(tmp / "checkpoints", keep_last=2, keep_best=True)
    counter = iter(range(1, 10**6))
    save_us = best_us(lambda: run._save(manager, module, optimizer, rng, next(counter), 0, 1.0, 1.0), number=1, repeat=5)
    rows.append(("final checkpoint (_save: 2 safetensors files, meta.json, index; 9 fsyncs)", "once", save_us,
                 save_us / args.steps))
    fresh = iter(range(10**6))

    def setup_dir():
        r = _Run(cfg, tmp / f"run{next(fresh)}", distributed.detect(), device)
        r.encoders = None
        r._setup_dir(False, None)
    setup_us = best_us(setup_dir, number=1, repeat=5)
    rows.append(("_setup_dir: config.yaml (yaml.safe_dump, atomic write: 2 fsyncs)", "once", setup_us,
                 setup_us / args.steps))
    def open_logs():
        d = tmp / f"logs{next(fresh)}"
        d.mkdir()
        _Logs(d, enabled=True, resume_step=None, total=60, progress=False, tensorboard=False).close()
    logs_us = best_us(open_logs, number=1, repeat=5)
    rows.append(("_Logs: metrics.csv header (atomic write: 2 fsyncs) + an empty Progress", "once", logs_us,
                 logs_us / args.steps))

    print(f"{'us/step':>10s}  {'us each':>10s}  {'how often':16s} item")
    for name, how, us, step_us in rows:
        print(f"{step_us:10.1f}  {us:10.1f}  {how:16s} {name}")
    total = sum(r[3] for r in rows)
    print(f"{total:10.1f} us/step in all ({args.case}, batch {args.batch}, {args.threads} thread(s), {args.steps} steps)")
    for note in notes:
        print(f"  for scale (the bare loop does the same): {note}")


if __name__ == "__main__":
    main()
