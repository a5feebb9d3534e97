"""Run one loss case (forward and backward) in this fresh process and print its extra peak memory as JSON.

Usage: ``python -m benchmarks._memprobe '{"family": ..., "method": ..., "n": ..., "d": ..., "tau": ...}' THREADS``.
Prints ``{"extra_bytes": ..., "seconds": ...}``; ``extra_bytes`` is ``null`` where ``/proc`` is unavailable.
"""

from __future__ import annotations

import json
import sys
import time


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    import torch

    from benchmarks._peers import build

    case, threads = json.loads(argv[0]), int(argv[1])
    torch.set_num_threads(threads)
    loss_fn = build(case["method"], case["family"], case["tau"])
    generator = torch.Generator().manual_seed(case.get("seed", 0))
    z1 = torch.randn(case["n"], case["d"], generator=generator).requires_grad_()
    z2 = torch.randn(case["n"], case["d"], generator=generator).requires_grad_()
    can_reset = _reset_peak()
    before = _status("VmRSS:")
    start = time.perf_counter()
    loss_fn(z1, z2).backward()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM:")
    extra = peak - before if can_reset and peak is not None and before is not None else None
    print(json.dumps({"extra_bytes": extra, "seconds": round(seconds, 6)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
