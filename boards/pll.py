"""PLL settings and instances: iCE40 ``SB_PLL40_PAD`` and ECP5 ``EHXPLLL``.

:func:`ice40_pll` / :func:`ecp5_pll` search the divider settings whose output is nearest
the requested frequency within the devices' documented ranges (as ``icepll`` and
``ecppll`` do); :func:`pll_instance` turns a setting into the primitive.
"""
from dataclasses import dataclass

from amaranth.hdl import Instance

__all__ = ["PLLSetting", "ice40_pll", "ecp5_pll", "pll_instance"]


@dataclass(frozen=True)
class PLLSetting:
    """Dividers of one PLL and the output frequency they give (``out_mhz``)."""
    family: str
    in_mhz: float
    out_mhz: float
    dividers: dict


def _nearest(candidates, in_mhz, want_mhz, family, at_most=False):
    if at_most:
        candidates = [c for c in candidates if c[0] <= want_mhz + 1e-9]
    if not candidates:
        raise ValueError(f"no {family} PLL setting makes {'at most ' * at_most}"
                         f"{want_mhz:g} MHz from {in_mhz:g} MHz")
    out, dividers = min(candidates, key=lambda c: abs(c[0] - want_mhz))
    return PLLSetting(family, in_mhz, out, dividers)


def ice40_pll(in_mhz, want_mhz, at_most=False):
    """``SB_PLL40`` in SIMPLE feedback: PFD 10-133 MHz, VCO 533-1066 MHz, output 16-275 MHz
    (iCE40 sysCLOCK PLL guide). The output nearest ``want_mhz``; ``at_most``: the fastest
    output not above it."""
    candidates = []
    for divr in range(16):
        pfd = in_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if 16 <= out <= 275:
                    filter_range = 1 + sum(pfd >= f for f in (17, 26, 44, 66, 101))
                    candidates.append((out, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                             "FILTER_RANGE": filter_range}))
    return _nearest(candidates, in_mhz, want_mhz, "iCE40", at_most)


def ecp5_pll(in_mhz, want_mhz, at_most=False):
    """``EHXPLLL`` with CLKOP feedback: PFD >= 3.125 MHz, VCO 400-800 MHz, output
    3.125-400 MHz (ECP5 sysCLOCK guide, as ``ecppll`` searches it); ``at_most`` as for
    :func:`ice40_pll`."""
    candidates = []
    for clki in range(1, 129):
        pfd = in_mhz / clki
        if pfd < 3.125:
            break
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not 3.125 <= out <= 400:
                continue
            clkop = next((d for d in range(1, 129) if 400 <= out * d <= 800), None)
            if clkop is not None:
                candidates.append((out, {"CLKI_DIV": clki, "CLKFB_DIV": clkfb,
                                         "CLKOP_DIV": clkop}))
    return _nearest(candidates, in_mhz, want_mhz, "ECP5", at_most)


def pll_instance(setting, clk_in, clk_out, lock):
    """The PLL primitive of ``setting``: reference ``clk_in`` (iCE40: the clock pin's
    ``io``; ECP5: the buffered clock), output ``clk_out``, ``lock``."""
    d = setting.dividers
    if setting.family == "iCE40":
        return Instance("SB_PLL40_PAD",
                        p_FEEDBACK_PATH="SIMPLE", p_DIVR=d["DIVR"], p_DIVF=d["DIVF"],
                        p_DIVQ=d["DIVQ"], p_FILTER_RANGE=d["FILTER_RANGE"],
                        i_PACKAGEPIN=clk_in, i_RESETB=1, i_BYPASS=0,
                        o_PLLOUTGLOBAL=clk_out, o_LOCK=lock)
    return Instance("EHXPLLL",
                    a_FREQUENCY_PIN_CLKI=f"{setting.in_mhz:g}",
                    a_FREQUENCY_PIN_CLKOP=f"{setting.out_mhz:g}",
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                    a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                    p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                    p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                    p_CLKOP_DIV=d["CLKOP_DIV"], p_CLKOP_CPHASE=d["CLKOP_DIV"] - 1,
                    p_CLKOP_FPHASE=0, p_CLKI_DIV=d["CLKI_DIV"], p_CLKFB_DIV=d["CLKFB_DIV"],
                    p_FEEDBK_PATH="CLKOP",
                    i_CLKI=clk_in, i_CLKFB=clk_out, i_RST=0, i_STDBY=0, i_PHASESEL0=0,
                    i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
                    i_PLLWAKESYNC=0, i_ENCLKOP=0,
                    o_CLKOP=clk_out, o_LOCK=lock)
