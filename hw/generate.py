"""Generate the accelerator's Verilog from ``accel.json``.

``python -m hw.generate --accel build/default-icebreaker/accel.json --out DIR`` writes
``DIR/accel.v`` (top module ``accel``: host byte streams ``i``/``o``, ``busy``) and prints
what it built. A configuration that cannot work is refused with the field that is wrong.
"""
import argparse
import sys
from pathlib import Path

from hw.accel import Accelerator
from hw.config import AccelConfig, ConfigError
from hw.export import to_verilog


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hw.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--accel", required=True, help="accelerator config (accel.json)")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    try:
        cfg = AccelConfig.load(args.accel)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "accel.v"
    path.write_text(to_verilog(Accelerator(cfg), "accel"))
    chunks = ", ".join(f"{name.upper()} {c.lanes}x{kind}" for name, kind, c in cfg.chunks)
    print(f"wrote {path}: {chunks}; activations {cfg.act_bytes} B in {cfg.word_bytes}-byte "
          f"words, {cfg.p_words} parameter words, {cfg.prog_words} program words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
