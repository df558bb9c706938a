"""Zip crafting now lives in the test kit; this name stays for the suites' imports."""

from testing.hostile.zips import (
    CDIR_SIG,
    EOCD_SIG,
    TORCH_META,
    Member,
    central_entries,
    deflated,
    patch_member,
    symlink,
    torch_zip,
    write_ratio_bomb,
    write_zip,
)

__all__ = ["CDIR_SIG", "EOCD_SIG", "TORCH_META", "Member", "central_entries", "deflated", "patch_member",
           "symlink", "torch_zip", "write_ratio_bomb", "write_zip"]
