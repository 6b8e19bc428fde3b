"""Amaranth generators for the chunk-based hybrid accelerator."""
