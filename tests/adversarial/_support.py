"""Helpers shared by the adversarial tests."""

from __future__ import annotations

import importlib.util

import pytest


def require(*modules: str) -> None:
    """Skip, with the reason shown, while a module another part of the product provides is missing."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"{module} is not available in this checkout")
