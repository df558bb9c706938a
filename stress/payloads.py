"""The code-running pickle payloads now live in the test kit; this name stays for the suites' imports."""

from testing.hostile.payloads import PAYLOADS, Emit, payload_pickle

__all__ = ["PAYLOADS", "Emit", "payload_pickle"]
