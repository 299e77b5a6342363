"""Running the node's own programs (nvidia-smi, dcgmi, the host's reboot) with a deadline.

A command is a path and its arguments, written as a shell-like line (`shlex`): settings and tests choose it, so a
test can put a small program where `nvidia-smi` would be, and production runs the real one the same way."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

OUTPUT_LIMIT = 1_000_000


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its exit status (None when it was killed at its deadline or never started), output."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """The last non-empty line of its output (stderr first), or how it ended."""
        if self.missing:
            return f"{self.argv[0]} not found"
        if self.timed_out:
            return f"{shlex.join(self.argv)} did not finish in time"
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1][:300]
        return f"exit status {self.returncode}"


def command_line(line: str) -> list[str]:
    """A configured command as argv; ValueError naming the problem when it is empty or unbalanced."""
    argv = shlex.split(line)
    if not argv:
        raise ValueError("a command needs at least a program path")
    return argv


def run_command(argv: Sequence[str], *, timeout_s: float) -> CommandResult:
    """Run `argv` without a shell; at `timeout_s` its whole process group is killed (a hung diag leaves nothing
    behind)."""
    args = tuple(argv)
    try:
        proc = subprocess.Popen(  # argv from the agent's own settings, no shell
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    except (FileNotFoundError, PermissionError) as exc:
        return CommandResult(args, None, "", str(exc), missing=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return CommandResult(args, None, out[-OUTPUT_LIMIT:], err[-OUTPUT_LIMIT:], timed_out=True)
    return CommandResult(args, proc.returncode, out[-OUTPUT_LIMIT:], err[-OUTPUT_LIMIT:])
