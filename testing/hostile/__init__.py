"""Builders of hostile files, made at test time (never checked in), for the tests and the stress corpus.

- ``asm``: ``Asm``, a pickle assembler that writes opcodes one by one (the streams ``pickle.dumps`` never
  writes are where attacks live);
- ``payloads``: one code-running payload per known technique (``PAYLOADS``, ``payload_pickle``);
- ``zips``: torch-layout zips and byte patches that ``zipfile`` itself will not write;
- ``builders``: small hostile pickles and containers for focused tests (``RunsCommand``,
  ``stack_global_pickle``, ``zip_with_data_pkl``, ``safetensors_bytes`` ...).
"""

from testing.hostile.asm import Asm
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
from testing.hostile.payloads import PAYLOADS, payload_pickle
from testing.hostile.zips import torch_zip, write_zip

__all__ = ["PAYLOADS", "Asm", "ResolvesName", "RunsCommand", "getattr_chain_pickle", "payload_pickle",
           "pickle_bytes", "protocol0_inst_pickle", "safetensors_bytes", "stack_global_pickle", "torch_zip",
           "write_zip", "zip_with_data_pkl"]
