"""The pickle assembler now lives in the test kit; this name stays for the suites' imports."""

from testing.hostile.asm import Asm

__all__ = ["Asm"]
