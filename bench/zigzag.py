"""ZigZag cross-check of our energy and cycle model (issue 5, point 8; the optional extra).

    .venv/bin/pip install -e '.[dse]'      # zigzag-dse 3.9.1 + six; not part of make setup/test
    .venv/bin/python bench/zigzag.py [--layer C K OH OW F] [--lanes 168]

One standard conv layer (default: AlexNet CONV3, Eyeriss's benchmark layer: 256 -> 384
channels, 3x3, 13x13 outputs from the padded 15x15 input) on an Eyeriss-sized configuration
(168 PEs, Eyeriss's 14 x 12), costed by our model (``sw.energy.layer_energy``,
``sw.costmodel.layer_cycles``) and by ZigZag in three ways, each printed as ours / ZigZag:

- ``engine, our order``: ZigZag evaluates our layer engine: a row of ``lanes`` PEs unrolling
  output channels, an accumulator per PE, one activation SRAM (inputs and outputs), one
  weight SRAM read a ``lanes``-wide word per beat, with the engine's loop order pinned (taps
  innermost: C, FX, FY; then OX, OY; then the lane groups). This checks our counting.
- ``engine, ZigZag's order``: the same hardware, ZigZag's search (LOMA) picks the loop order
  of least energy: what another loop order would save on our memories.
- ``Eyeriss-like``: 14 x 12 PEs with the per-PE register files of ZigZag's
  ``eyeriss_like.yaml`` (64 B inputs, 64 B weights, 16 B partial sums) under the same two
  SRAMs (Eyeriss's bandwidths); ZigZag searches the spatial and the temporal mapping.

Both sides use the same unit energies (``sw.energy``): a MAC is ``mul_pj(8, 8) +
add_pj(acc)``, a memory access ``bits * sram_bit_pj(size)`` of the memory's size, register
files included. Compared: compute plus activation and weight traffic, with the SRAMs sized to
the layer. Left out: our requantisation and parameter reads (ZigZag has no post-processing)
and off-chip traffic (ZigZag needs a DRAM on top: it costs 0 here and the SRAM side of its
transfers, the SRAM fill and the output drain, is subtracted: the engine keeps weights
resident and activations in its banks between layers). Our side uses 1-byte activation
words, so both read 8 input bits per beat. Cycles: ``layer_cycles`` vs ZigZag's
``latency_total0`` (compute and stalls, without loading and offloading).
"""
import argparse
import logging
import math
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file's folder first on the path would shadow the zigzag package with this file
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from sw.costmodel import layer_cycles  # noqa: E402
from sw.energy import Memories, add_pj, layer_energy, mul_pj, sram_bit_pj  # noqa: E402
from sw.program import ConvLayer  # noqa: E402

ACC_BITS = 20
ALEXNET_CONV3 = (256, 384, 13, 13, 3)        # C, K, OH, OW, F
EYERISS_ARRAY = (14, 12)
#: ZigZag's eyeriss_like.yaml register files: name, operand, bytes, port bits
EYERISS_RF = (("rf_i", "I1", 64, 8), ("rf_w", "I2", 64, 8), ("rf_o", "O", 16, 24))
MISSING = ("bench/zigzag.py: the optional extra [dse] is not installed (zigzag-dse, six); "
           "install it with `.venv/bin/pip install -e '.[dse]'`")


def layer_of(c, k, oh, ow, f):
    """The layer as the engine sees it: a padded input, no padding left."""
    return ConvLayer("broadcast", (c, oh + f - 1, ow + f - 1), k, f)


def sizes(layer, lanes):
    """Bytes of the activation SRAM (input and output) and of the weight SRAM (the engine's
    ``lanes``-wide words, one per tap and lane group)."""
    c, h, w = layer.in_shape
    oh, ow = layer.out_hw
    return c * h * w + layer.out_c * oh * ow, layer.groups(lanes, 1) * lanes * layer.taps()


def ours(layer, lanes):
    """Our pJ (compute + activation + weight traffic) and cycles of ``layer``."""
    act, weight = sizes(layer, lanes)
    e = layer_energy(layer, "clp", lanes=lanes, word_bytes=1, w_bits=8, acc_bits=ACC_BITS,
                     mem=Memories(act_bytes=act, weight_bytes=weight))
    return e.compute + e.act + e.weight, layer_cycles(layer, lanes, 1)


def _port(name, kind, bits, allocation):
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits,
            "allocation": allocation}


def memory(operands, size_bits, bits, served, cost=True):
    """A ZigZag memory of ``size_bits`` with one read and one write port of ``bits``; an
    access costs ``bits * sram_bit_pj(size in bytes)`` (0 with ``cost=False``)."""
    pj = bits * sram_bit_pj(size_bits / 8) if cost else 0.0
    reads = [f"{op}, tl" for op in operands] + (["O, th"] if "O" in operands else [])
    writes = [f"{op}, fh" for op in operands] + (["O, fl"] if "O" in operands else [])
    return {"size": size_bits, "r_cost": pj, "w_cost": pj, "area": 0.0, "latency": 1,
            "operands": list(operands), "served_dimensions": served,
            "ports": [_port("r_port_1", "read", bits, reads),
                      _port("w_port_1", "write", bits, writes)]}


def hardware(layer, lanes, eyeriss):
    """ZigZag accelerator description: our engine, or the Eyeriss-like array."""
    act, weight = sizes(layer, lanes)
    dims = ["D1", "D2"] if eyeriss else ["D1"]
    mems = {}
    if eyeriss:
        for name, op, size, bits in EYERISS_RF:
            mems[name] = memory([op], 8 * size, bits, [])
    else:
        mems["acc"] = memory(["O"], ACC_BITS, ACC_BITS, [], cost=False)
    mems["wmem"] = memory(["I2"], 8 * weight, 128 if eyeriss else 8 * lanes, dims)
    mems["act"] = memory(["I1", "O"], 8 * act, 384 if eyeriss else 8, dims)
    mems["dram"] = memory(["I1", "I2", "O"], 1 << 40, 1 << 16, dims, cost=False)
    return {"name": "eyeriss_like" if eyeriss else "nasa_engine", "memories": mems,
            "operational_array": {"unit_energy": mul_pj(8, 8) + add_pj(ACC_BITS),
                                  "unit_area": 1.0, "dimensions": dims,
                                  "sizes": list(EYERISS_ARRAY) if eyeriss else [lanes]}}


def mapping(layer, lanes, pinned):
    """ZigZag mapping: the engine's (output channels across the lanes, and with ``pinned``
    its loop order, innermost first), or none for the Eyeriss-like array (searched)."""
    m = {"name": "default", "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}
    if lanes:
        m["spatial_mapping"] = {"D1": [f"K, {lanes}"]}
    if pinned:
        c, _, _ = layer.in_shape
        oh, ow = layer.out_hw
        loops = [["C", c], ["FX", layer.kernel], ["FY", layer.kernel], ["OX", ow], ["OY", oh],
                 ["K", layer.groups(lanes, 1)]]
        m["temporal_ordering"] = [lp for lp in loops if lp[1] > 1]   # ZigZag fails on 1s
    return [m]


def workload(layer):
    c, _, _ = layer.in_shape
    oh, ow = layer.out_hw
    return [{"id": 0, "name": "conv", "operator_type": "Conv",
             "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
             "dimension_relations": ["ix=1*ox+1*fx", "iy=1*oy+1*fy"],
             "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
             "loop_sizes": [1, layer.out_c, c, oh, ow, layer.kernel, layer.kernel],
             "operand_precision": {"W": 8, "I": 8, "O": ACC_BITS, "O_final": 8},
             "operand_source": {"I": 0}}]


def on_chip_pj(cme):
    """ZigZag's energy less the SRAM side of its DRAM transfers (the level under the DRAM:
    writes from above, reads to above)."""
    from zigzag.hardware.architecture.memory_port import DataDirection as D
    off = sum(levels[-2].get(D.WR_IN_BY_HIGH) + levels[-2].get(D.RD_OUT_TO_HIGH)
              for levels in cme.mem_energy_breakdown_further.values())
    return cme.energy_total - off


def zigzag(layer, lanes, eyeriss=False, pinned=False):
    """ZigZag's on-chip pJ and cycles (``latency_total0``) of the least-energy mapping."""
    import yaml
    from zigzag.api import get_hardware_performance_zigzag
    with tempfile.TemporaryDirectory() as d:
        for name, data in (("hw", hardware(layer, lanes, eyeriss)),
                           ("map", mapping(layer, None if eyeriss else lanes, pinned))):
            Path(d, f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        logging.disable(logging.CRITICAL)
        _, _, cmes = get_hardware_performance_zigzag(
            workload(layer), f"{d}/hw.yaml", f"{d}/map.yaml", opt="energy", dump_folder=d,
            loma_show_progress_bar=False)
        logging.disable(logging.NOTSET)
    cme = cmes[0][1][0][0]                        # the one layer's evaluation
    return on_chip_pj(cme), cme.latency_total0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/zigzag.py", description=__doc__.splitlines()[0])
    ap.add_argument("--layer", nargs=5, type=int, default=ALEXNET_CONV3,
                    metavar=("C", "K", "OH", "OW", "F"), help="default: AlexNet CONV3")
    ap.add_argument("--lanes", type=int, default=math.prod(EYERISS_ARRAY),
                    help="PEs of our engine (default: Eyeriss's 168)")
    args = ap.parse_args(argv)
    if not all(find_spec(m) for m in ("zigzag", "six")):   # zigzag-dse needs six, undeclared
        print(MISSING, file=sys.stderr)
        return 2
    layer = layer_of(*args.layer)
    e, cyc = ours(layer, args.lanes)
    print(f"layer C={args.layer[0]} K={args.layer[1]} out {args.layer[2]}x{args.layer[3]} "
          f"F={args.layer[4]}; ours: {e / 1e6:.2f} uJ, {cyc} cycles on {args.lanes} lanes")
    print(f"{'ZigZag on':<24} {'uJ':>9} {'cycles':>10}  ours/ZigZag energy  cycles")
    for label, kw in (("engine, our order", dict(pinned=True)),
                      ("engine, ZigZag's order", {}), ("Eyeriss-like", dict(eyeriss=True))):
        ze, zc = zigzag(layer, args.lanes, **kw)
        print(f"{label:<24} {ze / 1e6:>9.2f} {zc:>10.0f}  {e / ze:>18.3f}  {cyc / zc:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
