"""Layer 1: files in and out: sources and read units, output folders, part stores."""
