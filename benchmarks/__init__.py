"""contrastlab's benchmark suite: ``python -m benchmarks.run`` (see :mod:`benchmarks.run`)."""
