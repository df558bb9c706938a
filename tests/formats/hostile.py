"""The hostile-file builders now live in the test kit (``testing.hostile``); this name stays for imports."""

from testing.hostile.builders import (
    ResolvesName,
    RunsCommand,
    getattr_chain_pickle,
    pickle_bytes,
    protocol0_inst_pickle,
    safetensors_bytes,
    stack_global_pickle,
    zip_with_data_pkl,
)

__all__ = ["ResolvesName", "RunsCommand", "getattr_chain_pickle", "pickle_bytes", "protocol0_inst_pickle",
           "safetensors_bytes", "stack_global_pickle", "zip_with_data_pkl"]
