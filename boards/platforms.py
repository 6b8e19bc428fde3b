"""Board names -> amaranth-boards platforms and the build options each needs."""
from dataclasses import dataclass

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform,
                                   ULX3S_45F_Platform, ULX3S_85F_Platform)

from hw import synth
from .toolchain import BuildOnly

__all__ = ["Board", "BOARDS", "get_board"]


ULX3S_LEDS = (("led", 0), ("led", 1), ("led", 2), ("led", 3))


@dataclass(frozen=True)
class Board:
    """A board: its platform class, bitstream file extension, FPGA family (``ice40`` or
    ``ecp5``; both synthesised with :mod:`hw.synth`'s script: the ABC9 name workaround,
    and on the iCE40 SB_MAC16s and SPRAM for the big memories, their zero inits
    dropped), the board top's default clock (``top_mhz``; ``None``: the board clock), its status LEDs
    (resource name, number; in :data:`boards.top.LEDS` order) and the name of a platform
    attribute with extra resources to add (``extra_resources``)."""
    name: str
    platform_cls: type
    bitstream_ext: str
    family: str = "ecp5"
    top_mhz: float | None = None
    leds: tuple = ULX3S_LEDS
    extra_resources: str = ""

    def platform(self):
        """A fresh platform instance (one per build) that does not require a programmer."""
        platform = type(self.platform_cls.__name__, (BuildOnly, self.platform_cls), {})()
        if self.extra_resources:
            platform.add_resources(getattr(platform, self.extra_resources))
        return platform

    def overrides(self, *, dsp=True, top="top"):
        """Extra ``platform.build()`` arguments for a design called ``top``; ``dsp``
        off keeps multipliers out of DSP blocks."""
        return synth.overrides(self.family, top, dsp=dsp)


BOARDS = {board.name: board for board in [
    # synth_ice40 leaves the SB_MAC16s unused without -dsp; synth_ecp5 uses MULT18X18Ds.
    # iCEBreaker: green/red on the board, the rest on the break-off PMOD (in PMOD2).
    Board("icebreaker", ICEBreakerPlatform, "bin", family="ice40", top_mhz=24.0,
          leds=(("led_g", 0), ("led_g", 1), ("led_g", 2), ("led_r", 0)),
          extra_resources="break_off_pmod"),
    *(Board(f"ulx3s-{size}", platform, "bit", top_mhz=30.0)
      for size, platform in (("12f", ULX3S_12F_Platform), ("25f", ULX3S_25F_Platform),
                             ("45f", ULX3S_45F_Platform), ("85f", ULX3S_85F_Platform))),
]}


def get_board(name):
    """The :class:`Board` called ``name``; ``ValueError`` listing the valid names."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; choose one of: {', '.join(BOARDS)}") from None
