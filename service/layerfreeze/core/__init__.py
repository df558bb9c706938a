"""The pure core: spec -> selection -> new state -> report. No I/O, no web framework, no torch."""
