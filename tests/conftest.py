"""Shared pytest setup: say once which RTL simulators the run uses; the one-thread torch
fixture of the training tests."""
import pytest

from sim.runner import SIMULATORS, SimulatorError, installed_simulators, selected_simulators


@pytest.fixture
def one_thread():
    """Tiny shapes: one torch thread is faster and immune to load from other jobs (use it
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_report_header(config):
    try:
        chosen = selected_simulators()
    except SimulatorError as error:
        return f"RTL simulators: {error}"
    missing = [sim for sim in SIMULATORS if sim not in installed_simulators()]
    note = f" ({', '.join(missing)} not installed: those runs are left out)" if missing else ""
    return f"RTL simulators: {', '.join(chosen) or 'none'}{note}"
