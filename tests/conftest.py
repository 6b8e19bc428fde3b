"""Shared pytest setup: say once which RTL simulators the run uses."""
from sim.runner import SIMULATORS, SimulatorError, installed_simulators, selected_simulators


def pytest_report_header(config):
    try:
        chosen = selected_simulators()
    except SimulatorError as error:
        return f"RTL simulators: {error}"
    missing = [sim for sim in SIMULATORS if sim not in installed_simulators()]
    note = f" ({', '.join(missing)} not installed: those runs are left out)" if missing else ""
    return f"RTL simulators: {', '.join(chosen) or 'none'}{note}"
