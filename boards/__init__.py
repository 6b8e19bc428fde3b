"""Board builds: amaranth-boards platforms driven by the YoWASP tools, a PE-row smoke top,
and nextpnr report parsing (``python -m boards.build``)."""
