"""Throughput of view generation: our batched augmentations against kornia on the same batch.

Run ``python -m contrastlab.views.benchmark [--batch 256] [--size 32] [--threads 2] [--repeats 20]``.
It prints one line per case (best and median milliseconds per batch, images per second) and, for
context, the time of one training step of a small CNN on the two views (the homework's 4-layer
stride-2 network), so the share of a step spent making views can be read off. kornia is a
development dependency: the kornia cases are skipped with a note when it is not installed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from contrastlab.views import augment as A
from contrastlab.views.simclr import SimCLRAugment


def _time_cases(cases: dict[str, Callable[[], object]], repeats: int,
                warmup: int = 3) -> dict[str, tuple[float, float]]:
    """(best, median) milliseconds per case; cases run round-robin so background load hits all alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (1000.0 * min(t), 1000.0 * statistics.median(t)) for name, t in times.items()}


def _small_cnn() -> nn.Module:
    """Four stride-2 convolutions and a linear layer; the pooling lets it take any image size."""
    layers, c = [], 3
    for width in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256 * 2 * 2, 128))


def run(*, batch: int = 256, size: int = 32, threads: int = 2, repeats: int = 20) -> dict[str, tuple[float, float]]:
    """(best, median) milliseconds per batch for each case (a missing kornia leaves its cases out)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    ours = SimCLRAugment(size=(size, size))
    shift = torch.rand(batch, generator=gen) - 0.5
    cases: dict[str, Callable[[], object]] = {
        "ours: SimCLR augmentation (one view)": lambda: ours(x, gen),
        "ours: hue shift": lambda: A.adjust_hue(x, shift),
    }
    try:
        import kornia.augmentation as K
        from kornia.enhance import adjust_hue
    except ImportError:
        print("kornia is not installed: kornia cases skipped")
    else:
        pipeline = nn.Sequential(
            K.RandomResizedCrop((size, size), scale=(0.2, 1.0)), K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
            K.RandomGaussianBlur((A.default_blur_kernel(size),) * 2, (0.1, 2.0), p=0.5))
        cases["kornia: SimCLR augmentation (one view)"] = lambda: pipeline(x)
        cases["kornia: hue shift"] = lambda: adjust_hue(x, shift * 2 * math.pi)
    model = _small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    views = torch.cat([x, x])

    def step():
        opt.zero_grad()
        model(views).square().mean().backward()
        opt.step()

    cases["small CNN training step on two views"] = step
    return _time_cases(cases, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    results = run(batch=args.batch, size=args.size, threads=args.threads, repeats=args.repeats)
    print(f"batch {args.batch}x3x{args.size}x{args.size}, {args.threads} thread(s), best and median of "
          f"{args.repeats} interleaved runs")
    for name, (best, median) in results.items():
        print(f"{name:40s} best {best:8.2f} ms ({args.batch / best * 1000.0:8.0f} images/s)  median {median:8.2f} ms")
    aug = results["ours: SimCLR augmentation (one view)"][0]
    step = results["small CNN training step on two views"][0]
    print(f"two views take {2 * aug / (2 * aug + step):.1%} of a step (views + CNN step, best times)")
    if "kornia: SimCLR augmentation (one view)" in results:
        print(f"speed-up over kornia (best times): {results['kornia: SimCLR augmentation (one view)'][0] / aug:.1f}x "
              f"(hue alone {results['kornia: hue shift'][0] / results['ours: hue shift'][0]:.1f}x)")


if __name__ == "__main__":
    main()
