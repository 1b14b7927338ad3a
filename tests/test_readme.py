"""The README's "Running a hub", run as a newcomer pastes it: every command, every output.

The ```console blocks of that section are the script: ``$ `` lines are commands, the
lines under one are what it must print (``...`` in a line stands for anything; a line
that is only ``...`` for any number of lines). Each block is one terminal: an
``export`` holds for the rest of its block only, so the switch's terminal has no biller
token (the read-only commands must not need it). The hub and the demo biller keep
running, as they do in their own terminals, until the end.

Only the ports change: the README's 8583, 9100 and 8010 become free ports, in the
example configuration, in the commands (``--port``, ``--url``) and in the output.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LONG_RUNNING = ("billhub serve", "billhub.simulator.rest_biller")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def walkthrough() -> list[list[Step]]:
    """The console blocks of "Running a hub", each a list of steps."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("\n## Running a hub\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", section, re.S)
    out: list[list[Step]] = []
    for block in blocks:
        steps: list[Step] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            else:
                steps[-1].expected.append(line)
        out.append(steps)
    return out


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.sub(r"\\ +", r"\\s+", re.escape(p)) for p in expected.strip().split("...")]
    return re.compile(".*".join(parts))


def check_output(actual: list[str], expected: list[str], command: str) -> None:
    """Expected lines in order, each the next actual line unless a ``...`` line precedes."""
    lines = [a.strip() for a in actual if a.strip()]
    i, skipping = 0, False
    for exp in expected:
        if exp.strip() == "...":
            skipping = True
            continue
        pat = line_pattern(exp)
        while skipping and i < len(lines) and not pat.fullmatch(lines[i]):
            i += 1
        assert i < len(lines), f"$ {command}\nmissing: {exp}\ngot:\n" + "\n".join(actual)
        assert pat.fullmatch(lines[i]), f"$ {command}\nexpected: {exp}\ngot:      {lines[i]}"
        i, skipping = i + 1, False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Background:
    """A command left running in its own terminal; its output read line by line."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-c", "exec " + command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, expected: list[str], timeout: float = 30) -> None:
        """Until every expected line has appeared, in order (other lines may come between)."""
        pending = [line_pattern(e) for e in expected if e.strip() != "..."]
        deadline = time.monotonic() + timeout
        while pending:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(
                    f"$ {self.command}\nnever printed: {pending[0].pattern}\n"
                    + "\n".join(self.seen)
                )
            self.seen.append(line)
            if pending[0].fullmatch(line.strip()):
                pending.pop(0)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def test_running_a_hub_as_the_readme_says(tmp_path: Path) -> None:
    venv_billhub = Path(sys.prefix) / "bin" / "billhub"
    if not venv_billhub.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{venv_billhub} missing: run the suite from the project's venv")
        pytest.skip("the README's commands need the project's .venv (run .venv/bin/pytest)")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    ports = {"8583": free_port(), "9100": free_port(), "8010": free_port()}

    def local(text: str) -> str:
        for readme, port in ports.items():
            text = re.sub(rf"\b{readme}\b", str(port), text)
        return text

    shutil.copy(ROOT / "billhub.example.toml", tmp_path / "billhub.example.toml")
    example = tmp_path / "billhub.example.toml"
    example.write_text(local(example.read_text("utf-8")), "utf-8")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BILLER_")}
    running: list[Background] = []
    blocks = walkthrough()
    assert len(blocks) >= 4, "the walk-through lost its console blocks"
    commands = [s.command for b in blocks for s in b]
    assert any("switch" in c and " pay " in c for c in commands)
    try:
        for block in blocks:
            env = dict(base_env)
            for step in block:
                command = local(step.command)
                command = command.replace(
                    "billhub switch ", f"billhub switch --port {ports['8583']} "
                ).replace(
                    "billhub status", f"billhub status --url http://127.0.0.1:{ports['9100']}"
                )
                expected = [local(e) for e in step.expected]
                if m := re.fullmatch(r"export (\w+)=(\S+)", command):
                    env[m.group(1)] = m.group(2)
                elif any(name in command for name in LONG_RUNNING):
                    bg = Background(command, tmp_path, env)
                    running.append(bg)
                    bg.wait_for(expected)
                else:
                    out = subprocess.run(
                        ["bash", "-c", command],
                        cwd=tmp_path,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                    )
                    assert out.returncode == 0, f"$ {command}\n{out.stdout}{out.stderr}"
                    check_output(out.stdout.splitlines(), expected, command)
        last_pay = [c for c in commands if " pay " in c][-1]
        assert "--biller 0010" in last_pay
    finally:
        codes = [bg.stop() for bg in reversed(running)]
    assert codes == [0] * len(running), codes
    assert (tmp_path / "billhub.db").exists(), "the journal is where the example says"
