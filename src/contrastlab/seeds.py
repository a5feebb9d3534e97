"""Seeds derived from a run's seed and integer keys (epoch, rank, worker lane, purpose): one function, used by
the sampler, the loop and the streams, and importable without the training package."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. ``(seed, epoch)`` or ``(seed, rank)``).

    Example:
        >>> derive_seed(0, 1) != derive_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0] >> 1)
