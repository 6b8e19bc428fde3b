"""Utilisation and timing from a nextpnr log (amaranth writes it as ``<name>.tim``)."""
import json
import re
from dataclasses import asdict, dataclass, field

__all__ = ["Usage", "ClockTiming", "Report", "parse_nextpnr_log"]

#: Report category -> nextpnr cell types, the first one in the log wins.
CATEGORIES = {
    "logic": ("ICESTORM_LC", "TRELLIS_COMB", "TRELLIS_SLICE"),
    "ffs": ("TRELLIS_FF",),
    "dsp": ("ICESTORM_DSP", "MULT18X18D"),
    "bram": ("ICESTORM_RAM", "DP16KD"),
    "spram": ("ICESTORM_SPRAM",),
}

_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_ICE40_FF = re.compile(r"^Info:\s+(\d+) LCs used as (?:LUT4 and DFF|DFF only)", re.M)
# nextpnr prints a failing clock's post-route line as a warning
_FMAX = re.compile(r"^(?:Info|Warning): Max frequency for clock '([^']+)': ([\d.]+) MHz"
                   r"(?: \((?:PASS|FAIL) at ([\d.]+) MHz\))?", re.M)
_ERROR = re.compile(r"^ERROR: (.*)$", re.M)


@dataclass
class Usage:
    """``used`` of ``total`` ``cell``s on the device."""
    cell: str
    used: int
    total: int

    @property
    def fits(self):
        return self.used <= self.total


@dataclass
class ClockTiming:
    """Achieved ``fmax_mhz`` of a clock net against its constraint (``None``: none)."""
    clock: str
    fmax_mhz: float
    target_mhz: float | None

    @property
    def met(self):
        return self.target_mhz is None or self.fmax_mhz >= self.target_mhz


@dataclass
class Report:
    """What one nextpnr run used and achieved; ``errors`` are its ``ERROR:`` lines."""
    resources: dict[str, Usage] = field(default_factory=dict)
    clocks: list[ClockTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def fits(self):
        return all(usage.fits for usage in self.resources.values())

    @property
    def timing_met(self):
        return bool(self.clocks) and all(clock.met for clock in self.clocks)

    @property
    def passed(self):
        return self.fits and self.timing_met and not self.errors

    def used(self, category):
        """Cells used in ``category`` (0 when the log does not list it)."""
        usage = self.resources.get(category)
        return usage.used if usage else 0

    def table(self):
        lines = [f"{'resource':<8} {'cell':<15} {'used':>7} {'total':>7} {'util':>6}"]
        for category, usage in self.resources.items():
            lines.append(f"{category:<8} {usage.cell:<15} {usage.used:>7} {usage.total:>7} "
                         f"{100 * usage.used / max(usage.total, 1):>5.1f}%")
        for clock in self.clocks:
            target = "unconstrained" if clock.target_mhz is None else \
                f"requested {clock.target_mhz:.2f} MHz"
            lines.append(f"clock {clock.clock}: fmax {clock.fmax_mhz:.2f} MHz, {target} "
                         f"-> {'PASS' if clock.met else 'FAIL'}")
        lines += [f"error: {error}" for error in self.errors]
        return "\n".join(lines)

    def to_dict(self):
        return {**asdict(self), "fits": self.fits, "timing_met": self.timing_met,
                "passed": self.passed}

    def to_json(self, **extra):
        """JSON of the report; ``extra`` keys (build metadata) come first."""
        return json.dumps({**extra, **self.to_dict()}, indent=2)


def parse_nextpnr_log(text):
    """A :class:`Report` of a nextpnr-ice40 / nextpnr-ecp5 log. The utilisation table
    and each clock's fmax are taken from their last occurrence (after routing); iCE40 FFs
    come from the packer's LC counts (one DFF per LC)."""
    cells = {cell: Usage(cell, int(used), int(total))
             for cell, used, total in _UTIL.findall(text)}
    report = Report(errors=_ERROR.findall(text))
    for category, names in CATEGORIES.items():
        found = next((cells[name] for name in names if name in cells), None)
        if found is None and category == "ffs" and "ICESTORM_LC" in cells:
            found = Usage("SB_DFF*", sum(map(int, _ICE40_FF.findall(text))),
                          cells["ICESTORM_LC"].total)
        if found is not None:
            report.resources[category] = found
    clocks = {}
    for clock, fmax, target in _FMAX.findall(text):
        clocks[clock] = ClockTiming(clock, float(fmax), float(target) if target else None)
    report.clocks = list(clocks.values())
    return report
