"""The one place the version is written: the package, its report and its build read it from here."""

__version__ = "0.1.0"
