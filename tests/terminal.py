"""The real CLI in a pseudo-terminal of a chosen size, read through a terminal emulator (pyte): what a person
sees, frame by frame, and what the program wrote (tests/test_terminal.py)."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pyte

from conftest import ROOT


@dataclass
class Session:
    """A finished run in a terminal: the exit code, the bytes written to the terminal, every screen seen
    while it ran (one per read; each a list of lines without trailing spaces) and the last one."""

    returncode: int
    raw: bytes
    frames: List[List[str]] = field(default_factory=list)
    stdout: Optional[str] = None  # when stdout was not the terminal

    @property
    def screen(self) -> List[str]:
        return self.frames[-1] if self.frames else []

    @property
    def text(self) -> str:
        return "\n".join(line for line in self.screen if line)


def terminal_env(**extra: Optional[str]) -> Dict[str, str]:
    """The environment of a person's terminal: CI and the colour switches unset unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env.update({"TERM": "xterm-256color", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_in_terminal(
    args: List[str],
    columns: int,
    rows: int = 50,
    env: Optional[Dict[str, str]] = None,
    stdout_piped: bool = False,
    timeout: float = 120,
    cwd=None,
    on_output=None,
) -> Session:
    """``occlude ARGS`` with stderr (and stdout, unless ``stdout_piped``) on a pseudo-terminal of ``columns`` x
    ``rows`` (set with TIOCSWINSZ before the program starts, so it reads that size). ``on_output(process,
    raw)`` is called after each read (to send a signal at the right moment)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    command = [sys.executable, "-m", "occlude_cli", *[str(a) for a in args]]
    process = subprocess.Popen(
        command,
        stdin=slave,
        stdout=subprocess.PIPE if stdout_piped else slave,
        stderr=slave,
        env=env if env is not None else terminal_env(),
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    raw = bytearray()
    frames: List[List[str]] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            if process.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not data:
            break
        raw += data
        stream.feed(data)
        frames.append([line.rstrip() for line in screen.display])
        if on_output is not None:
            on_output(process, bytes(raw))
    stdout = process.stdout.read().decode() if stdout_piped and process.stdout else None
    process.wait(timeout=30)
    os.close(master)
    return Session(process.returncode, bytes(raw), frames, stdout)
