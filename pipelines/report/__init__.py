"""Layer 5: what a person reads: the HTML report and the console summary."""
