"""Exit codes of the ``layerfreeze`` command, one per error class, resolved along the class's MRO
(so a new subclass gets its parent's code until it is given its own)."""

from __future__ import annotations

from layerfreeze import errors

OK = 0
INTERNAL = 1  # a bug: please report it
USAGE = 2  # argparse's own code for bad arguments
NO_INPUT = 66  # sysexits EX_NOINPUT: the model or spec file does not exist or cannot be read
IO_ERROR = 74  # sysexits EX_IOERR: the output cannot be written
CONFIG = 78  # sysexits EX_CONFIG: `layerfreeze serve` was given a setting it cannot use

BY_CLASS: dict[type[BaseException], int] = {
    errors.SpecError: 3,
    errors.FormatError: 4,
    errors.UnsafePickleError: 5,
    errors.PickleFormatError: 6,
    errors.ArchiveError: 7,
    errors.SafetensorsFormatError: 8,
    errors.LimitExceeded: 9,
    errors.JobError: 11,
    errors.InvalidSettings: CONFIG,
    errors.LayerfreezeError: 12,
    FileNotFoundError: NO_INPUT,
    IsADirectoryError: NO_INPUT,
    PermissionError: NO_INPUT,
    OSError: IO_ERROR,
    KeyboardInterrupt: 130,
}


def exit_code_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in BY_CLASS:
            return BY_CLASS[cls]
    return INTERNAL
