"""Integer golden model: the only definition of what the hardware computes (int64 numpy)."""
