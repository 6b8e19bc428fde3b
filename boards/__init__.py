"""Board builds: amaranth-boards platforms driven by the YoWASP tools, the accelerator's
board top (PLL, UART link, LEDs) and a PE-row smoke top, nextpnr report parsing
(``python -m boards.build``), flashing (``boards.flash``) and the host CLI (``boards.host``)."""
