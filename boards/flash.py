"""Program a board with a bitstream: iceprog (iCEBreaker) or openFPGALoader (ULX3S).

    python -m boards.flash --board icebreaker --bitstream build/default-icebreaker/top.bin

Each tool's usual target: iceprog writes the iCEBreaker's SPI flash (it boots from it),
openFPGALoader loads the ULX3S's SRAM (lost at power-off; ``--flash`` writes its flash).
Exit status 2 with one line when the programmer or the board is missing (naming what to
install or plug in), 1 when the bitstream is missing or programming fails.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .platforms import BOARDS

__all__ = ["Programmer", "programmer", "command", "main"]


@dataclass(frozen=True)
class Programmer:
    """A programming tool: its command (overridable by ``$<env>``), the Debian package
    that installs it, the pattern of its "no board" message and the board's label."""
    tool: str
    env: str
    package: str
    no_board: str
    label: str


ICEPROG = Programmer("iceprog", "ICEPROG", "fpga-icestorm",
                     r"Can't find iCE FTDI USB device|No such device", "iCEBreaker")
OPENFPGALOADER = Programmer("openFPGALoader", "OPENFPGALOADER", "openfpgaloader",
                            r"unable to open ftdi device|JTAG init failed|No cable|"
                            r"cable not found|fails to open device", "ULX3S")


def programmer(board):
    """The :class:`Programmer` of ``board`` (a name in :data:`boards.platforms.BOARDS`)."""
    return ICEPROG if board == "icebreaker" else OPENFPGALOADER


def command(board, bitstream, to_flash=False):
    """The programming command line of ``board`` for ``bitstream``."""
    prog = programmer(board)
    tool = os.environ.get(prog.env, prog.tool)
    if prog is ICEPROG:
        return [tool, str(bitstream)]
    return [tool, "-b", "ulx3s"] + (["-f"] if to_flash else []) + [str(bitstream)]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m boards.flash", description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, choices=BOARDS)
    ap.add_argument("--bitstream", required=True, type=Path)
    ap.add_argument("--flash", action="store_true",
                    help="ULX3S: write the SPI flash (kept over power cycles), not SRAM")
    args = ap.parse_args(argv)
    prog = programmer(args.board)
    if not args.bitstream.is_file():
        print(f"error: no bitstream at {args.bitstream}; build it with `make bitstream "
              f"BOARD={args.board}`", file=sys.stderr)
        return 1
    cmd = command(args.board, args.bitstream, args.flash)
    if shutil.which(cmd[0]) is None:
        print(f"error: {prog.tool} not found; install it (apt install {prog.package}) or set "
              f"${prog.env}", file=sys.stderr)
        return 2
    print(" ".join(cmd), flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        print(output.splitlines()[-1] if output else "done")
        return 0
    if re.search(prog.no_board, output):
        print(f"error: no {prog.label} found by {prog.tool}; plug the board in over USB "
              "(and check its USB permissions/udev rules)", file=sys.stderr)
        return 2
    last = output.splitlines()[-1] if output else f"exit status {result.returncode}"
    print(f"error: {prog.tool} failed: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
