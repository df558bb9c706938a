"""``layerfreeze`` command line.

    layerfreeze freeze MODEL --spec SPEC.json -o OUT [--report REPORT.json] [--dry-run]
    layerfreeze freeze MODEL --spec-json '{"rules": [...]}' -o OUT
    layerfreeze inspect MODEL [--json] [--digest]
    layerfreeze patch create MODEL --spec SPEC.json -o PATCH.json
    layerfreeze patch apply PATCH.json MODEL -o OUT
    layerfreeze serve [--host 127.0.0.1] [--port 8000]
    layerfreeze worker                     (the distributed mode: LAYERFREEZE_QUEUE=celery)

Errors print one line on stderr and exit with the code of their class (``cli/exit_codes.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from layerfreeze import __version__
from layerfreeze.cli import exit_codes
from layerfreeze.errors import LayerfreezeError, SpecError

if TYPE_CHECKING:
    from layerfreeze.core.report import Report


class UsageError(Exception):
    """Bad command-line arguments found after parsing (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerfreeze",
        description="Freeze PyTorch checkpoints by rule, without ever executing them.",
    )
    parser.add_argument("--version", action="version", version=f"layerfreeze {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    freeze = commands.add_parser("freeze", help="apply a freeze spec and write the modified checkpoint")
    freeze.add_argument("model", type=Path, help="checkpoint to read (never executed)")
    spec = freeze.add_mutually_exclusive_group(required=True)
    spec.add_argument("--spec", type=Path, metavar="SPEC.json", help="freeze spec file ('-' for stdin)")
    spec.add_argument("--spec-json", metavar="JSON", help="freeze spec given inline")
    freeze.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="where to write the checkpoint (a directory: <name>.frozen<suffix> in it)")
    freeze.add_argument("--report", type=Path, metavar="REPORT.json", help="also write the report as JSON")
    freeze.add_argument("--dry-run", action="store_true", help="report only, write no checkpoint")
    _digest_option(freeze, "also compute the sha256 of the input and of the output (reads both once more)")
    _output_options(freeze)

    inspect = commands.add_parser("inspect", help="report the parameters and their states, change nothing")
    inspect.add_argument("model", type=Path)
    _digest_option(inspect, "also compute the file's sha256 (reads the whole file; off by default)")
    _output_options(inspect)

    patch = commands.add_parser("patch", help="write or apply a layerfreeze-patch/1 delta")
    patch_commands = patch.add_subparsers(dest="patch_command", required=True, metavar="ACTION")
    create = patch_commands.add_parser("create", help="the freeze of MODEL as a delta against MODEL")
    create.add_argument("model", type=Path)
    create_spec = create.add_mutually_exclusive_group(required=True)
    create_spec.add_argument("--spec", type=Path, metavar="SPEC.json",
                             help="freeze spec file ('-' for stdin)")
    create_spec.add_argument("--spec-json", metavar="JSON", help="freeze spec given inline")
    create.add_argument("-o", "--output", type=Path, required=True, metavar="PATCH.json")
    apply = patch_commands.add_parser("apply", help="rebuild the output from a patch and its base file")
    apply.add_argument("patch", type=Path, metavar="PATCH.json")
    apply.add_argument("model", type=Path, help="the base file (or model directory) of the patch")
    apply.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")

    serve = commands.add_parser("serve", help="start the HTTP service")
    serve.add_argument("--host", help="interface to listen on (default: LAYERFREEZE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: LAYERFREEZE_PORT or 8000)")
    commands.add_parser("worker", help="run jobs of the distributed mode (LAYERFREEZE_QUEUE=celery) until "
                        "SIGTERM; LAYERFREEZE_WORKERS freeze processes",
                        description="A Celery worker for the distributed mode, with the settings of the API "
                                    "replicas (LAYERFREEZE_QUEUE=celery, LAYERFREEZE_BROKER_URL, "
                                    "LAYERFREEZE_DATABASE_URL, LAYERFREEZE_DATA_DIR on the shared volume): "
                                    "LAYERFREEZE_WORKERS jobs at a time, each in its own freeze process. "
                                    "SIGTERM: running jobs finish, then it exits. See docs/distributed.md.")

    commands.add_parser("migrate", help="bring the record database's schema up to date (serve does it too)",
                        description="Upgrade the schema of LAYERFREEZE_DATABASE_URL (PostgreSQL, by Alembic, "
                                    "under an advisory lock: safe while other processes start), or of the "
                                    "SQLite file in LAYERFREEZE_DATA_DIR.")
    return parser


DEFAULT_DEPTH = 2  # the root, its children and theirs: a model's outline, not its 200-line inventory


def _depth(value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a depth (0, 1, 2, ...) or 'all', got {value!r}")


def _digest_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--digest", action="store_true", help=text)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--depth", type=_depth, default=DEFAULT_DEPTH, metavar="N|all",
                        help=f"show the module tree down to depth N, or all of it (default: {DEFAULT_DEPTH})")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.host, args.port)
        if args.command == "worker":
            return _worker()
        if args.command == "migrate":
            return _migrate()
        if args.command == "patch":
            from layerfreeze.cli.patch import apply_patch, create_patch

            if args.patch_command == "create":
                return create_patch(args.model, _read_spec(args), args.output)
            return apply_patch(args.patch, args.model, args.output)
        code = _freeze_or_inspect(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except UsageError as exc:
        parser.error(str(exc))  # exits with 2
        raise AssertionError("unreachable") from exc
    except BrokenPipeError:
        return end_on_broken_pipe()
    except BaseException as exc:  # every failure ends as one line and an exit code, never a traceback
        if isinstance(exc, SystemExit):
            raise
        print(f"layerfreeze: error: {_describe(exc)}", file=sys.stderr)
        return exit_codes.exit_code_for(exc)


def _freeze_or_inspect(args: argparse.Namespace) -> int:
    from layerfreeze.freeze import freeze_file, output_filename

    if args.command == "inspect":
        spec: str | bytes = "{}"
        output = None
    else:
        spec = _read_spec(args)
        if args.dry_run and args.output is not None:
            raise UsageError("--dry-run writes no checkpoint: drop -o/--output")
        if not args.dry_run and args.output is None:
            raise UsageError("-o/--output is required (or --dry-run)")
        output = args.output
        if args.model.is_dir():
            return _freeze_directory(args, spec, output)
        if output is not None and output.is_dir():  # like cp: into the directory, under the usual name
            output = output / output_filename(args.model.name)
        if output is not None and output.exists() and output.resolve() == args.model.resolve():
            raise UsageError("the output would overwrite the input model; choose another -o")
        if output is not None and not output.absolute().parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "output directory does not exist", str(output.parent))
    if args.model.is_dir():
        return _freeze_directory(args, spec, output)
    if not args.model.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such model file", str(args.model))
    report = freeze_file(args.model, spec, output, digest=args.digest)
    return _show(args, report)


def _freeze_directory(args: argparse.Namespace, spec: str | bytes, output: Path | None) -> int:
    """A model directory (an index and its shards, CONTRACT section 9) in, a directory out."""
    from layerfreeze.freeze import freeze_directory

    if output is not None and output.exists() and output.resolve() == args.model.resolve():
        raise UsageError("the output would overwrite the input model; choose another -o")
    return _show(args, freeze_directory(args.model, spec, output, digest=args.digest))


def _show(args: argparse.Namespace, report: Report) -> int:
    from layerfreeze.cli.render import render

    if getattr(args, "report", None) is not None:
        _write_text(args.report, report.model_dump_json(indent=2) + "\n")
    if args.quiet:
        return exit_codes.OK
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render(report, depth=args.depth))
    return exit_codes.OK


def _read_spec(args: argparse.Namespace) -> str | bytes:
    if args.spec_json is not None:
        return str(args.spec_json)
    if str(args.spec) == "-":
        return sys.stdin.buffer.read()
    return Path(args.spec).read_bytes()


def _write_text(path: Path, text: str) -> None:
    """Write next to ``path`` and rename, so a failure never leaves half a report."""
    from layerfreeze.freeze import new_file_mode

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent or Path("."))
    try:
        os.fchmod(fd, new_file_mode())  # as a shell redirection would create it, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _serve(host: str | None, port: int | None) -> int:
    try:
        from layerfreeze.server import serve
    except ImportError as exc:
        raise LayerfreezeError(f"the HTTP service is not available in this installation ({exc})") from exc
    serve(host, port)  # a bad setting, a data directory or port in use: one line and its exit code
    return exit_codes.OK


def _worker() -> int:
    from layerfreeze.errors import InvalidSettings
    from layerfreeze.logs import configure_logging
    from layerfreeze.server import load_settings, require_distributed

    settings = load_settings()
    if not settings.distributed:
        raise InvalidSettings("layerfreeze worker runs jobs of the distributed mode: set "
                              "LAYERFREEZE_QUEUE=celery and LAYERFREEZE_BROKER_URL")
    require_distributed()
    from layerfreeze.worker.remote import run_worker

    configure_logging(settings.log_level)
    run_worker(settings)
    return exit_codes.OK


def _migrate() -> int:
    from layerfreeze.server import load_settings
    from layerfreeze.storage import lock as data_dir_lock
    from layerfreeze.storage.blobs import BlobStore
    from layerfreeze.storage.db import redact
    from layerfreeze.storage.jobs import JobStore
    from layerfreeze.storage.schema import upgrade

    settings = load_settings()
    if settings.database_url:
        store = JobStore(Path(), settings.database_url)  # opening it upgrades it
        try:
            revision = upgrade(store.db)  # nothing left to do; names the revision
        finally:
            store.close()
        print(f"{redact(settings.database_url)}: schema at revision {revision}")
        return exit_codes.OK
    blobs = BlobStore(settings.data_dir)
    data_dir_lock.acquire(blobs.root, "layerfreeze migrate")  # not under a running service
    try:
        JobStore(blobs.db_path).close()
    finally:
        data_dir_lock.release(blobs.root)
    print(f"{blobs.db_path}: schema up to date")
    return exit_codes.OK


def end_on_broken_pipe() -> int:
    """The reader of our output went away (``| head``): end as ``cat`` does, by SIGPIPE's default action,
    with no message (a shell shows status 141). stdout goes to /dev/null first, so that nothing left in
    its buffer makes the interpreter complain on its way out."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + 13


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SpecError):
        lines = [exc.detail]
        for issue in exc.issues:
            hint = f" (did you mean: {', '.join(issue.suggestions)})" if issue.suggestions else ""
            lines.append(f"  {issue.pointer or '/'}: {issue.message}{hint}")
        return "\n".join(lines)
    if isinstance(exc, LayerfreezeError):
        return exc.detail
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"internal error ({type(exc).__name__}: {exc}); please report this"


if __name__ == "__main__":
    raise SystemExit(main())
