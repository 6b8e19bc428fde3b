"""Hardware-aware hybrid architecture search (docs/search.md).

    python -m sw.search --dataset fashion-mnist --board icebreaker --budget 400000 \\
        --name searched [--quick] [--objective latency|energy] [--cost model|flops] \\
        [--space hybrid|conv|mult-free] [--resume] [--seed S] [--force] \\
        [--proxy-networks N --proxy-epochs N --proxy-margin SE ...]

The final selection's options (``--candidates`` .. ``--proxy-margin``, defaults of the
mode: full or ``--quick``) may differ on ``--resume`` once the search's epochs are done:
the finished search then selects again (the proxy trainings already run are reused).

Writes ``archs/<name>/arch.json`` (never over an existing ``archs/<name>/`` without
``--force``) and ``build/search/<name>/`` (checkpoint, log.jsonl, result.json, pareto.png).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from sw.arch import ArchError  # noqa: E402
from sw.train import DATASETS, REPO  # noqa: E402

from .hwcost import BOARDS  # noqa: E402
from .run import SearchConfig, SearchError, repo_relative, run_search  # noqa: E402
from .space import SPACES, SpaceError  # noqa: E402

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_budget(text, fmax):
    """Cycles from ``N`` (cycles) or ``Xms`` (milliseconds at ``fmax`` MHz)."""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            if fmax is None:
                raise ValueError(f"--budget {text}: a budget in ms needs --fmax MHZ")
            return float(t[:-2]) * fmax * 1e3
        value = float(t)
    except ValueError as e:
        if "--fmax" in str(e):
            raise
        raise ValueError(f"--budget {text!r}: expected cycles (e.g. 400000) or "
                         "milliseconds (e.g. 8ms with --fmax)") from None
    if value <= 0:
        raise ValueError(f"--budget {text}: must be positive")
    return value


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m sw.search", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    ap.add_argument("--board", choices=BOARDS, default="icebreaker")
    ap.add_argument("--budget", default=None,
                    help="cycles per image, or e.g. 8ms with --fmax (default: the macro "
                         "network's own cost); with --cost flops: proxy FLOPs")
    ap.add_argument("--fmax", type=float, default=None, help="clock in MHz for a ms budget")
    ap.add_argument("--name", required=True, help="writes archs/NAME/arch.json")
    ap.add_argument("--quick", action="store_true", help="small subset, < 5 minutes")
    ap.add_argument("--objective", choices=("latency", "energy"), default="latency")
    ap.add_argument("--cost", choices=("model", "flops"), default="model",
                    help="accelerator cost model (default) or NASA's FLOPs proxy")
    ap.add_argument("--space", choices=tuple(SPACES), default="hybrid")
    ap.add_argument("--macro", default=SearchConfig.macro,
                    help="arch.json whose stem/widths/strides fix the skeleton")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--search-epochs", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    ap.add_argument("--force", action="store_true", help="overwrite archs/NAME/")
    ap.add_argument("--out", default=None, help="default build/search/NAME")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    sel = ap.add_argument_group("final selection (docs/search.md)")
    for key, kind, _, text in SELECTION_FLAGS:
        sel.add_argument("--" + key.replace("_", "-"), type=kind, default=None, help=text)
    return ap


#: the final selection's options on the command line: (SearchConfig field, type, least
#: value, help)
SELECTION_FLAGS = (
    ("candidates", int, 1, "most probable in-budget networks in the pool"),
    ("family_candidates", int, 0, "most probable all-conv and all-mult-free networks each"),
    ("pool_random", int, 0, "random in-budget networks in the pool"),
    ("proxy_networks", int, 0, "networks of the pool trained from scratch (0: one-shot pick)"),
    ("proxy_epochs", int, 1, "epochs of each proxy training"),
    ("proxy_images", int, 1, "training images of each proxy training"),
    ("proxy_margin", float, 0, "pick the cheapest within this many standard errors of the "
                               "best proxy accuracy (0: the best)"),
)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if not _NAME.fullmatch(args.name):
            raise ValueError(f"--name {args.name!r}: use 1-64 letters, digits, '.', '_', '-'")
        arch_dir = REPO / "archs" / args.name
        out = Path(args.out) if args.out else REPO / "build" / "search" / args.name
        own = args.resume and (out / "checkpoint.pt").is_file()   # this run's own output
        if arch_dir.exists() and not (args.force or own):
            raise ValueError(f"{arch_dir} exists; pick another --name or add --force to "
                             "overwrite it")
        budget = parse_budget(args.budget, args.fmax) if args.budget is not None else None
        extra = {k: v for k, v in (("train_images", args.train_images),
                                   ("search_epochs", args.search_epochs)) if v is not None}
        if any(v < 1 for v in extra.values()) or args.threads < 1:
            raise ValueError("--train-images, --search-epochs and --threads must be >= 1")
        for key, _, least, _ in SELECTION_FLAGS:
            value = getattr(args, key)
            if value is not None and value < least:
                raise ValueError(f"--{key.replace('_', '-')} {value}: must be >= {least}")
            if value is not None:
                extra[key] = value
        make = SearchConfig.quick if args.quick else SearchConfig
        cfg = make(dataset=args.dataset, board=args.board, budget=budget,
                   objective=args.objective, cost=args.cost, space=args.space,
                   seed=args.seed, macro=repo_relative(args.macro), **extra)
        if args.cost == "flops" and args.objective == "energy":
            raise ValueError("--objective energy needs --cost model")
        torch.set_num_threads(args.threads)
        run_search(cfg, out, arch_dir / "arch.json", args.name, resume=args.resume,
                   log=lambda s: print(s, flush=True))
    except (SearchError, ArchError, SpaceError, ValueError, FloatingPointError,
            OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the last finished epoch is in the checkpoint; --resume "
              "continues)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
