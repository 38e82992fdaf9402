"""Layer 3: the scan core, without Beam: the plan, row validation, keys, partials and
fits, scoring, the finish step and the summary."""
