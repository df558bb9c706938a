"""Symbolic reading of pickle streams: opcodes become inert nodes; nothing is imported or called."""
