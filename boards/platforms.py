"""Board names -> amaranth-boards platforms and the build options each needs."""
from dataclasses import dataclass

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform,
                                   ULX3S_45F_Platform, ULX3S_85F_Platform)

from .toolchain import BuildOnly

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """A board: its platform class, bitstream file extension and the Yosys synthesis
    options that enable (``dsp_opts``) or disable (``nodsp_opts``) DSP inference."""
    name: str
    platform_cls: type
    bitstream_ext: str
    dsp_opts: str = ""
    nodsp_opts: str = ""

    def platform(self):
        """A fresh platform instance (one per build) that does not require a programmer."""
        return type(self.platform_cls.__name__, (BuildOnly, self.platform_cls), {})()

    def overrides(self, *, dsp=True):
        """Extra ``platform.build()`` arguments."""
        return {"synth_opts": self.dsp_opts if dsp else self.nodsp_opts}


BOARDS = {board.name: board for board in [
    # synth_ice40 leaves the SB_MAC16s unused without -dsp; synth_ecp5 uses MULT18X18Ds.
    Board("icebreaker", ICEBreakerPlatform, "bin", dsp_opts="-dsp"),
    Board("ulx3s-12f", ULX3S_12F_Platform, "bit", nodsp_opts="-nodsp"),
    Board("ulx3s-25f", ULX3S_25F_Platform, "bit", nodsp_opts="-nodsp"),
    Board("ulx3s-45f", ULX3S_45F_Platform, "bit", nodsp_opts="-nodsp"),
    Board("ulx3s-85f", ULX3S_85F_Platform, "bit", nodsp_opts="-nodsp"),
]}


def get_board(name):
    """The :class:`Board` called ``name``; ``ValueError`` listing the valid names."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; choose one of: {', '.join(BOARDS)}") from None
