"""Errors users can cause, and how every raycf command prints them.

    python -m raycf.<command> ... [--debug]     # one line per problem, exit status 2; --debug: the traceback

Every mistake a user can make (a config key, a data row, a model folder, a tracking URI, a full disk) raises a
UserError subclass whose lines name the file, the key or row, and the fix. `cli()` is the one runner every
`main()` goes through, so they all print errors the same way.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
from typing import Callable


class UserError(Exception):
    """Bad user input or environment; str(e) is the whole message, one problem per line."""
    in_config = False  # a problem of the config file: a CLI's lines name that file
    located = False    # each line names where it comes from already (a file or a --set flag)
    exit_status = 2
    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + p for p in self.problems))

    def lines(self, source: str | None = None) -> str:
        """What a CLI prints: `error: <file>: <key or line>: <problem>; <fix>`, one line per problem;
        `source` (the YAML the run came from) names the file when the error does not already."""
        where = "" if self.source or self.located or not source else f"{source}: "
        return "\n".join(f"error: {where}{line}" for line in str(self).splitlines())


class ConfigError(UserError, ValueError):
    """A config key, a search space or a CLI flag that cannot be used."""
    in_config = True


class DataError(UserError, ValueError):
    """A data file, row or task definition that cannot be used."""


class ModelError(UserError, ValueError):
    """A model name or folder that cannot be used."""


class ReportError(UserError):
    """A report that cannot be made from what the tracking store holds."""


class TrackingUnreachable(UserError, ConnectionError):
    """The MLflow tracking server does not answer."""


class ClusterUnreachable(UserError, ConnectionError):
    """The Ray cluster named by RAY_ADDRESS does not answer or does not let this process in."""


class StorageFull(UserError, OSError):
    """No space left where results are being written; the message says what is kept and how to go on."""


class Interrupted(UserError):
    """Ctrl-C (SIGINT): what was kept and how to go on; the command exits with status 130."""
    exit_status = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. `ray job stop`), handled like Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts():
    """Inside the block, SIGTERM unwinds like Ctrl-C (runs ended, Ray stopped): `ray job stop` sends it, then
    SIGKILL 3 s later. Enter it after ray.init, which installs a SIGTERM handler of its own (sys.exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def did_you_mean(word, options, n: int = 1, cutoff: float = 0.6) -> str:
    """'; did you mean 'x'?' for the closest option(s), else '; known: a, b, c' (in the order given)."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), options, n=n, cutoff=cutoff)
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"; known: {', '.join(options)}"


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser for `python -m <prog>` with --debug, the flag every raycf command takes."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line per problem")
    return p


def cli(p: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None], argv=None,
        source: Callable[[argparse.Namespace], str | None] | None = None) -> int:
    """Parse `argv` with `p` (made by parser()), run body(args) and return its exit status (None = 0). A
    UserError becomes its lines on stderr and status 2; --debug re-raises it. source(args): the config file
    (e.g. the --space YAML) that the lines of a config problem name when they do not name a file themselves."""
    args = p.parse_args(argv)
    if not args.debug:  # stderr is for the error lines: no Hugging Face progress bars (model builds, downloads)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return body(args) or 0
    except UserError as e:
        if args.debug:
            raise
        print(e.lines(source(args) if source and e.in_config else None), file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted (SIGINT or SIGTERM)", file=sys.stderr)
        return 130
