"""The board flow's accelerator config: ``accel.json`` for ``make bitstream``.

    python -m boards.config --qmodel Q --board icebreaker --out build/default-icebreaker \
        [--lanes 4,6,4]

Runs the mapper (``sw.mapper``, as ``make map`` does). On a board whose part needs the
small-FPGA organisation (the iCEBreaker: one shared engine, activations in SPRAM,
parameters in the activation memory, 16-bit program words; docs/accelerator.md) the
mapper's config is kept when it is that organisation; otherwise (the mapper stops with a
shortfall, or picks the per-chunk organisation) ``sw.mapper.small_config`` sizes it with
``--lanes`` (CLP,SLP,ALP; default 4,6,4) and 2-byte words. On other boards this is
``make map``. Exit 2 with one line when no config can be made.
"""
import argparse
import sys
from pathlib import Path

from hw.config import AccelConfig
from sw import mapper
from sw.golden import model as golden

__all__ = ["SMALL_BOARDS", "DEFAULT_LANES", "is_small", "board_config", "main"]

#: Boards whose accelerator takes the small-FPGA organisation.
SMALL_BOARDS = ("icebreaker",)
#: The small organisation's lanes (CLP, SLP, ALP) when the mapper does not choose them.
DEFAULT_LANES = (4, 6, 4)


def is_small(cfg):
    """Whether ``cfg`` is the small-FPGA organisation (shared engine, split activations)."""
    return bool(cfg.shared_engine and cfg.act_split)


def parse_lanes(text):
    lanes = tuple(int(n) for n in text.split(","))
    if len(lanes) != 3 or min(lanes) < 0:
        raise argparse.ArgumentTypeError(f"--lanes wants CLP,SLP,ALP (three counts), "
                                         f"got {text!r}")
    return lanes


def board_config(qmodel, board, out, lanes=None, objective="latency", log=print):
    """Run the mapper into ``out`` and return (``out/accel.json``, how it was made). On a
    :data:`SMALL_BOARDS` board, a mapper config that is not the small organisation (or
    none) is replaced by ``sw.mapper.small_config(qm, lanes)``; ``lanes`` given always
    takes the small organisation with those lanes."""
    out = Path(out)
    accel = out / "accel.json"
    argv = ["--qmodel", str(qmodel), "--board", board, "--out", str(out), "--no-plot",
            "--objective", objective]
    if board not in SMALL_BOARDS:
        if mapper.main(argv):
            raise SystemExit(2)
        return accel, "mapper"
    if lanes is None:
        accel.unlink(missing_ok=True)
        if mapper.main(argv) == 0 and is_small(AccelConfig.load(accel)):
            return accel, "mapper (small organisation)"
        lanes = DEFAULT_LANES
        log(f"{board}: the mapper did not choose the small organisation; "
            f"sw.mapper.small_config with CLP, SLP, ALP lanes {lanes}")
    qm = golden.load(qmodel)
    cfg = mapper.small_config(qm, dict(zip(("clp", "slp", "alp"), lanes)))
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(accel)
    return accel, f"small_config lanes {','.join(map(str, lanes))}"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m boards.config",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--qmodel", required=True, type=Path)
    ap.add_argument("--board", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--objective", default="latency", choices=mapper.OBJECTIVES)
    ap.add_argument("--lanes", type=parse_lanes,
                    help="small organisation with these CLP,SLP,ALP lanes (skips the mapper)")
    args = ap.parse_args(argv)
    try:
        accel, how = board_config(args.qmodel, args.board, args.out, args.lanes,
                                  args.objective)
    except (mapper.MapError, golden.QModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {accel} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
