"""Command line: ``python -m arraygen <command> ...`` (or ``arraygen <command>``).

Each command is a module in :mod:`arraygen.commands` with ``HELP`` (one line),
``add_arguments(parser)``, optionally ``check(args)`` (validates the arguments before any work;
raises :class:`UsageError`) and ``run(args) -> int``; new commands only add a module there.

Errors: a bad argument ends in one argparse-style line, ``<prog> <command>: error: ...`` naming
the argument, and exit status 2, whether argparse, ``check`` or ``run`` finds it
(:class:`UsageError`, ``ValueError``, ``TypeError``, ``OSError``); any other exception in one
line and exit status 1. ``--debug`` shows the traceback instead. INFO messages of the
``arraygen`` logger (e.g. ``compiling kernels (first run only) ... done in 12.3 s``) go to stderr
without breaking a progress bar; ``--verbose`` adds DEBUG.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path

from . import commands

PROG = "python -m arraygen"


class UsageError(ValueError):
    """A bad command-line argument; the message names it (``argument --out: ...``)."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"argument {argument}: {message}")


# -- argument types (argparse ``type=`` callables: their errors name the argument) ----------

def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {text!r}") \
            from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _int(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite positive number; got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """A path to an existing, readable file."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text!r}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: permission denied")
    return path


def existing_path(text: str) -> Path:
    """A path to an existing file or folder."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return path


def output_dir(text: str) -> Path:
    """A folder that exists and is writable, or can be created (nothing is created here)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder; got ''")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {str(parent)!r} is not a "
                                         "folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {str(parent)!r}: permission denied")
    return path


def make_output_dir(path: Path, argument: str = "--out") -> Path:
    """Create the output folder ``path``; a failure is a :class:`UsageError` naming
    ``argument``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".arraygen-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(argument, f"cannot write to {str(path)!r}: "
                                   f"{exc.strerror or exc}") from None
    return path


def check_device(value: str | None, argument: str = "--device") -> None:
    """A ``cuda``/``cuda:N`` device must exist (torch sees CUDA and N is in range); ``cupy``
    must import and see a GPU. Anything else is left to the command."""
    if not value:
        return
    text = str(value).strip().lower()
    if text.startswith("cuda"):
        try:
            import torch
        except ImportError:
            raise UsageError(argument, f"{value!r} needs torch with CUDA; torch is not "
                                       "installed") from None
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = text.partition(":")[2]
        if count == 0:
            raise UsageError(argument, f"{value!r}: no CUDA device is visible here")
        if index and (not index.isdigit() or int(index) >= count):
            raise UsageError(argument, f"{value!r}: CUDA devices here are cuda:0..cuda:"
                                       f"{count - 1}")
    elif text == "cupy":
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # ImportError, or CUDARuntimeError without a GPU
            raise UsageError(argument, f"'cupy' cannot run here ({type(exc).__name__}: "
                                       f"{_one_line(exc)})") from None


# -- logging ------------------------------------------------------------------------------

class _ProgressFriendlyHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` through ``tqdm.write`` (a progress bar on
    screen is redrawn below the message instead of being broken by it)."""

    def emit(self, record):
        try:
            msg = self.format(record)
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=sys.stderr)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                print(msg, file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging's own policy
            self.handleError(record)


@contextlib.contextmanager
def _log_to_stderr(verbose: bool):
    """Route the ``arraygen`` logger (INFO, or DEBUG with ``verbose``) to stderr for one run."""
    logger = logging.getLogger("arraygen")
    handler = _ProgressFriendlyHandler()
    handler.setFormatter(logging.Formatter("[arraygen] %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# -- parser and main ----------------------------------------------------------------------

def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name.replace("_", "-"), f"{commands.__name__}.{info.name}"


def _add_common(parser, default):
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log at DEBUG level")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error")


def build_parser(prog: str = PROG):
    """The parser and ``{command: (module, subparser)}``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    _add_common(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = {}
    for name, module_name in _command_modules():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        _add_common(p, argparse.SUPPRESS)  # after the command too; never resets the top level
        module.add_arguments(p)
        table[name] = (module, p)
    return parser, table


def _prog() -> str:
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return PROG if base in ("", "__main__.py", "-c") else base


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status (2: bad argument)."""
    parser, table = build_parser(_prog())
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    module, subparser = table[args.command]
    with _log_to_stderr(args.verbose):
        try:
            check = getattr(module, "check", None)
            try:
                check_device(getattr(args, "device", None))
                if check is not None:
                    check(args)
            except UsageError as exc:
                if args.debug:
                    raise
                subparser.error(str(exc))  # usage + one line, exit 2
            return int(module.run(args) or 0)
        except KeyboardInterrupt:
            print(f"{subparser.prog}: interrupted", file=sys.stderr)
            return 130
        except (ValueError, TypeError, OSError) as exc:
            if args.debug:
                raise
            print(f"{subparser.prog}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:
            if args.debug:
                raise
            print(f"{subparser.prog}: error: {type(exc).__name__}: {_one_line(exc)} (run again "
                  "with --debug for the traceback)", file=sys.stderr)
            return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
