"""``python -m experiments --config configs/<study>.py[:arg] --workdir runs/<name>``.

Thin entry point: parse the command line, load and override the config, run the study.
Exit status 0 on success, 2 on a bad command line or config (the message names the field).
"""

from __future__ import annotations

import logging
import shlex
import sys

from experiments.allocator import reexec_with_malloc_tuning

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    # imported here, not at the top: cli() re-executes the process before anything heavy loads
    from experiments.cli import parse_command_line, usage
    from experiments.errors import ConfigError
    from experiments.runner import run
    from experiments.workdir import resolve_workdir

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cmd = parse_command_line(args)
        if cmd.help:
            print(usage())
            return 0
        workdir = resolve_workdir(cmd.workdir)
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("experiments").setLevel(logging.WARNING if cmd.quiet else logging.INFO)
        command = shlex.join(["python", "-m", "experiments", *args])
        run(cmd.config, workdir, max_chunks=cmd.max_chunks, command=command)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: see {workdir / 'report.md'}")
    return 0


def cli() -> int:
    """The command-line entry point: :func:`main` under the tuned allocator
    (:mod:`experiments.allocator`; the process re-executes itself once to apply it)."""
    reexec_with_malloc_tuning("experiments", sys.argv[1:])
    return main()


if __name__ == "__main__":
    sys.exit(cli())
