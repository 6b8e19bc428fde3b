"""Simulation: cocotb testbenches and the runner that drives them from pytest."""
