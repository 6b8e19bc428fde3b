"""Verilog export of a top-level ``wiring.Component``."""
from amaranth.back import verilog
from amaranth.hdl import Const, Value


def component_ports(component):
    """The component's port signals, skipping members fixed to constants (e.g. the
    ``ready`` of an ``always_ready`` stream), which Verilog export cannot take as ports."""
    ports = []
    for _path, _member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if not isinstance(value, Const):
            ports.append(value)
    return ports


def to_verilog(component, name):
    """Verilog text of ``component`` as a module called ``name`` (ports ``<path>__<member>``)."""
    return verilog.convert(component, name=name, ports=component_ports(component),
                           emit_src=False)
