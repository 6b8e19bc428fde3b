"""Forward+backward time of adder layers (fast C++ kernel and unfold+cdist reference) vs conv2d
of the same shape, batch 128, on all of torch's threads; medians over repeats.

Run: .venv/bin/python bench/adder_kernels.py [--repeats 9] [--batch 128] [--threads N]
Targets: fast adder <= 2x conv; fast adder >= 5x faster than the reference.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sw.kernels import adder_fast, adder_ref  # noqa: E402

# name: (C, O, K, H, stride, padding, groups)
SHAPES = {
    "pointwise 32->64 14x14": (32, 64, 1, 14, 1, 0, 1),
    "depthwise 3x3 96ch 14x14": (96, 96, 3, 14, 1, 1, 96),
    "standard 3x3 16->32 28x28": (16, 32, 3, 28, 1, 1, 1),
}


def fwd_bwd(fn, x, w, gy):
    """Seconds of one forward+backward of fn(x, w)."""
    x.grad = w.grad = None
    t = time.perf_counter()
    fn(x, w).backward(gy)
    return time.perf_counter() - t


def bench(shape, batch, repeats):
    """Median seconds (conv, fast adder, reference adder) for one layer shape; conv and fast
    runs alternate so that load from other jobs hits both alike."""
    c, o, k, h, s, p, g = shape
    x = torch.randn(batch, c, h, h, requires_grad=True)
    w = torch.randn(o, c // g, k, k, requires_grad=True)
    gy = torch.randn_like(F.conv2d(x, w, None, s, p, 1, g))
    fns = {"conv": lambda a, b: F.conv2d(a, b, None, s, p, 1, g),
           "fast": lambda a, b: adder_fast.adder2d(a, b, s, p, g),
           "ref": lambda a, b: adder_ref.adder2d(a, b, s, p, g)}
    times = {name: [] for name in fns}
    for i in range(repeats + 1):  # the first round is a warm-up
        for name in ("conv", "fast") if i % 3 else fns:
            times[name].append(fwd_bwd(fns[name], x, w, gy))
    return [statistics.median(times[name][1:]) for name in fns]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    adder_fast.extension()  # build outside the timings
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"ISA {adder_fast._isa()[0]}; forward+backward, median ms")
    print(f"{'shape':28s} {'conv':>8s} {'fast':>8s} {'ref':>9s} {'fast/conv':>10s} {'ref/fast':>9s}")
    ok = True
    for name, shape in SHAPES.items():
        conv, fast, ref = bench(shape, args.batch, args.repeats)
        ok &= fast <= 2 * conv and ref >= 5 * fast
        print(f"{name:28s} {conv*1e3:8.2f} {fast*1e3:8.2f} {ref*1e3:9.1f} "
              f"{fast/conv:9.2f}x {ref/fast:8.1f}x")
    print(f"targets (fast/conv <= 2x, ref/fast >= 5x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
