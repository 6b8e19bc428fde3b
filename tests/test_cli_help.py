"""Every command-line entry point answers ``--help`` with its usage (argparse formats each
help string, so a stray ``%`` in one breaks the whole page)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ["boards.build", "boards.calibrate", "boards.config", "boards.flash", "boards.host",
           "hw.generate", "sim.network", "sw.arch", "sw.datasets", "sw.golden.model",
           "sw.mapper", "sw.quant", "sw.resources", "sw.search", "sw.train"]
SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("argv", [["-m", m] for m in MODULES] + [[f"bench/{s}"] for s in SCRIPTS],
                         ids=lambda argv: argv[-1])
def test_help(argv):
    r = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr.strip().splitlines()[-1:]
    assert r.stdout.startswith("usage:"), r.stdout[:200]
