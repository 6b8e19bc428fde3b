"""Hardware-aware hybrid architecture search (NASA): supernet, PGP, Gumbel-softmax search
with the accelerator's cost model in the loss. CLI: ``python -m sw.search`` (docs/search.md)."""
