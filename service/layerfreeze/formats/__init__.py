"""Adapters between file formats and the core's Inventory. They parse archives as data, never execute them."""
