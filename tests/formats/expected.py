"""What torch says of a live model now lives in the test kit (``testing.oracle``); this name stays."""

from testing.oracle import Expected, dtype_name, of_module, of_state_dict

__all__ = ["Expected", "dtype_name", "of_module", "of_state_dict"]
