"""Layer 4: the drivers that run the scan core: in memory, or as a Beam pipeline."""
