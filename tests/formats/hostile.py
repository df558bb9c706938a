"""The hostile-file builders now live in the test kit (``testing.hostile``); this name stays for imports."""

from testing.hostile.builders import *  # noqa: F403
from testing.hostile.builders import __all__  # noqa: F401
