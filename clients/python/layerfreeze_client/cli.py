"""``layerfreeze-client``: the service from the shell.

Exit codes: 0 ok; 1 a local failure (e.g. the output cannot be written); 2 usage (bad arguments, a missing
model or spec file); 3 the service rejected the input (4xx: invalid spec or checkpoint, auth, unknown job,
too large); 4 the service failed (5xx) or answered in a shape this client does not know; 5 the service
could not be reached or the job did not finish in time; 6 the download did not match its checksum.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._client import Client
from ._errors import (
    APIError,
    ClientError,
    IntegrityError,
    RejectedError,
    ResponseFormatError,
    TransportError,
    WaitTimeout,
)
from ._retry import Retry
from ._spec import Spec
from ._table import render_jobs, render_report

__all__ = ["EXIT_INTEGRITY", "EXIT_OK", "EXIT_REJECTED", "EXIT_SERVICE", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "main"]

EXIT_OK = 0
EXIT_LOCAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_SERVICE = 4
EXIT_UNREACHABLE = 5
EXIT_INTEGRITY = 6

SELECTOR_PREFIXES = ("names", "params", "types", "regex", "until")


class _RuleAction(argparse.Action):
    """``--freeze`` / ``--unfreeze`` keep their command-line order: rules apply in order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        rules = list(getattr(namespace, self.dest, None) or [])
        rules.append((self.const, list(values)))
        setattr(namespace, self.dest, rules)


def spec_from_flags(rules: list[tuple[str, list[str]]], strict: bool) -> Spec:
    """``PATTERN`` is a name pattern; ``params:bias``, ``types:LayerNorm``, ``regex:...``, ``until:layer2``
    choose another selector. The patterns of one flag are alternatives: one rule per selector kind."""
    spec = Spec(strict=strict)
    for action, patterns in rules:
        grouped: dict[str, list[str]] = {}
        for pattern in patterns:
            kind, sep, value = pattern.partition(":")
            if not sep or kind not in SELECTOR_PREFIXES:
                kind, value = "names", pattern
            grouped.setdefault(kind, []).append(value)
        for kind, values in grouped.items():
            if kind == "until":
                for value in values:
                    getattr(spec, action)(until=value)
            else:
                getattr(spec, action)(**{kind: values})
    return spec


GLOBAL_DEFAULTS: dict[str, Any] = {"url": None, "token": None, "timeout": 60.0, "retries": 4, "json": False,
                                   "no_progress": False}


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, before or after the command name. The subcommands' copies default
    to SUPPRESS: argparse copies a subparser's namespace over the main one, so a real default there would
    overwrite what was given before the command."""

    def default(name: str) -> Any:
        return argparse.SUPPRESS if suppress else GLOBAL_DEFAULTS[name]

    parser.add_argument("--url", default=default("url"),
                        help="service URL (env LAYERFREEZE_URL; http://127.0.0.1:8000)")
    parser.add_argument("--token", default=default("token"), help="bearer token (env LAYERFREEZE_TOKEN)")
    parser.add_argument("--timeout", type=float, default=default("timeout"),
                        help="seconds per network operation (60)")
    parser.add_argument("--retries", type=int, default=default("retries"),
                        help="retries on connection errors, 429 and 503 (4)")
    parser.add_argument("--json", action="store_true", default=default("json"),
                        help="print JSON instead of tables")
    parser.add_argument("--no-progress", action="store_true", default=default("no_progress"),
                        help="no progress bars")


DEFAULT_DEPTH = 2  # the root, its children and theirs


def _depth(value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a depth (0, 1, 2, ...) or 'all', got {value!r}")


def _depth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=_depth, default=DEFAULT_DEPTH, metavar="N|all",
                        help=f"show the module tree down to depth N, or all of it (default: {DEFAULT_DEPTH})")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)

    parser = argparse.ArgumentParser(
        prog="layerfreeze-client",
        description="Freeze PyTorch checkpoints through a layerfreeze service.",
        epilog="global options may come before or after the command. "
               "exit codes: 0 ok, 1 local failure, 2 usage, 3 input rejected by the service (4xx), "
               "4 service failure (5xx), 5 service unreachable or timed out, 6 checksum mismatch",
    )
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("freeze", parents=[common], help="freeze a checkpoint by rule and download the result")
    p.add_argument("model", type=Path, help="the checkpoint to upload: a file, or a model directory "
                                            "(index, shards, config, ...) frozen as one model")
    p.add_argument("--spec", type=Path, help="a freeze spec JSON file ('-' for stdin)")
    p.add_argument("--freeze", dest="rules", nargs="+", action=_RuleAction, const="freeze",
                       metavar="PATTERN", help="freeze what PATTERN selects (prefix params:, types:, regex:, "
                                               "until: for other selectors; default: names)")
    p.add_argument("--unfreeze", dest="rules", nargs="+", action=_RuleAction, const="unfreeze",
                   metavar="PATTERN", help="make trainable what PATTERN selects (same forms as --freeze)")
    p.add_argument("--no-strict", action="store_true", help="a rule that selects nothing is only a warning")
    p.add_argument("-o", "--output", type=Path, help="where to write the frozen checkpoint (default: "
                                                   "<stem>.frozen<suffix> beside MODEL; for a directory, "
                                                   "a new directory <name>.frozen)")
    p.add_argument("--dry-run", action="store_true", help="report only; download nothing")
    p.add_argument("--delta", action=argparse.BooleanOptionalAction, default=None,
                   help="rebuild the output from the local file and a patch instead of downloading it "
                        "(default: when the service froze this very file); --delta also skips the "
                        "upload when the service already stores the file")
    p.add_argument("--report", type=Path, dest="report_file", help="also write the report JSON here")
    p.add_argument("--params", action="store_true", help="list every parameter instead of modules")
    _depth_option(p)

    p = sub.add_parser("inspect", parents=[common], help="report a checkpoint's parameters (nothing changes)")
    p.add_argument("model", type=Path, help="a checkpoint file or a model directory")
    p.add_argument("--params", action="store_true", help="list every parameter instead of modules")
    _depth_option(p)

    p = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    p.add_argument("--limit", type=int, default=20, help="at most this many (20)")

    p = sub.add_parser("report", parents=[common], help="print a finished job's report")
    p.add_argument("job")
    p.add_argument("--params", action="store_true", help="list every parameter instead of modules")
    _depth_option(p)

    p = sub.add_parser("download", parents=[common], help="download a job's frozen checkpoint")
    p.add_argument("job")
    p.add_argument("-o", "--output", type=Path, required=True, help="file (or directory) to write")

    p = sub.add_parser("delete", parents=[common], help="delete a job and its files")
    p.add_argument("job")
    return parser


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _load_spec(path: Path) -> str:
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    try:
        json.loads(text)
    except ValueError as exc:
        raise _UsageError(f"{path}: not valid JSON ({exc})") from None
    return text


class _UsageError(Exception):
    pass


def _spec_arg(args: argparse.Namespace) -> Any:
    return _load_spec(args.spec) if args.spec else spec_from_flags(args.rules, not args.no_strict)


def _run(args: argparse.Namespace) -> int:
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    if args.retries < 0:
        raise _UsageError("--retries must be >= 0")
    retry = Retry(retries=args.retries)
    with Client(args.url, token=args.token, timeout=args.timeout, retry=retry) as client:
        if args.command in ("freeze", "inspect"):
            if not args.model.is_file() and not args.model.is_dir():
                raise _UsageError(f"{args.model}: no such file or directory")
            if args.command == "inspect" or args.dry_run:
                spec: Any = _spec_arg(args) if args.command == "freeze" else None
                result = client.inspect(args.model, spec, progress=progress)
            else:
                result = client.freeze(args.model, _spec_arg(args), args.output, progress=progress,
                                       delta=args.delta)
            if getattr(args, "report_file", None):
                args.report_file.write_text(json.dumps(result.report.raw, indent=2) + "\n", encoding="utf-8")
            if args.json:
                _print_json({"job": result.job.raw, "report": result.report.raw,
                             "output": str(result.output) if result.output else None})
            else:
                print(render_report(result.report, parameters=args.params, depth=args.depth))
                if result.output is not None:
                    print(f"\nwrote {result.output}")
        elif args.command == "jobs":
            jobs = list(client.jobs(limit=args.limit))
            if args.json:
                _print_json([j.raw for j in jobs])
            else:
                print(render_jobs(jobs))
        elif args.command == "report":
            report = client.report(args.job)
            if args.json:
                _print_json(report.raw)
            else:
                print(render_report(report, parameters=args.params, depth=args.depth))
        elif args.command == "download":
            path = client.download(args.job, args.output, progress=progress)
            print(json.dumps({"output": str(path)}) if args.json else f"wrote {path}")
        elif args.command == "delete":
            client.delete(args.job)
            if not args.json:
                print(f"deleted {args.job}")
    return EXIT_OK


def _end_on_broken_pipe() -> int:
    """The reader of our output went away (``| head``): end as ``cat`` does, by SIGPIPE's default action,
    with no message (a shell shows status 141). stdout goes to /dev/null first, so that nothing left in
    its buffer makes the interpreter complain on its way out."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "freeze" and (args.spec is None) == (not args.rules):
            raise _UsageError("freeze needs either --spec or --freeze/--unfreeze rules (not both)")
        code = _run(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BrokenPipeError:
        return _end_on_broken_pipe()
    except _UsageError as exc:
        print(f"layerfreeze-client: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RejectedError as exc:
        print(f"layerfreeze-client: rejected: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except APIError as exc:
        print(f"layerfreeze-client: service error: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except (TransportError, WaitTimeout) as exc:
        print(f"layerfreeze-client: cannot complete: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ResponseFormatError as exc:
        print(f"layerfreeze-client: unexpected answer from the service (another version?): {exc}",
              file=sys.stderr)
        return EXIT_SERVICE
    except IntegrityError as exc:
        print(f"layerfreeze-client: download corrupted: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except (ClientError, OSError, ValueError) as exc:
        print(f"layerfreeze-client: error: {exc}", file=sys.stderr)
        return EXIT_LOCAL
    except KeyboardInterrupt:
        print("layerfreeze-client: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
