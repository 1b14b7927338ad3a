"""The image's locked dependency versions: ``requirements.lock``, made and checked here.

``python .ci/lock.py`` installs billhub into a fresh virtual environment (the way the
image does, from pyproject.toml) and writes every distribution it pulled in, pinned, to
``requirements.lock``, with the digest of pyproject's dependency list in its header.
The Dockerfile installs exactly those versions (``--no-deps -r requirements.lock``),
so an image built next month has the versions tested today.

``python .ci/lock.py --check`` (CI, no network, well under a second) fails when the
lock no longer belongs to pyproject.toml: its digest differs (a dependency was added,
removed or re-specified), a direct dependency is missing or pinned outside its range,
or a line is not an exact ``name==version`` pin.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")
DIGEST = "# pyproject dependencies sha256: "


def project(root: Path = ROOT) -> dict[str, object]:
    data = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    return dict(data["project"])


def digest(root: Path = ROOT) -> str:
    p = project(root)
    what = {"requires-python": p.get("requires-python"), "dependencies": p["dependencies"]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def problems(root: Path = ROOT) -> list[str]:
    """Why ``requirements.lock`` does not belong to ``pyproject.toml`` (empty: it does)."""
    lock = root / "requirements.lock"
    if not lock.is_file():
        return ["requirements.lock is missing"]
    lines = lock.read_text("utf-8").splitlines()
    out: list[str] = []
    if DIGEST + digest(root) not in lines:
        out.append("pyproject.toml's dependencies changed since the lock was made")
    pins: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = PIN.fullmatch(text)
        if m is None:
            out.append(f"line {n} is not an exact pin (name==version): {text}")
            continue
        pins[canonicalize_name(m.group(1))] = m.group(2)
    for spec in project(root)["dependencies"]:  # type: ignore[attr-defined]
        req = Requirement(spec)
        have = pins.get(canonicalize_name(req.name))
        if have is None:
            out.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(have, prereleases=True):
            out.append(f"{req.name}=={have} is outside {req.specifier}")
    return out


def make() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", str(ROOT)], check=True)
        frozen = subprocess.run(
            [*pip, "freeze", "--exclude", "billhub"], check=True, capture_output=True, text=True
        ).stdout
    version = ".".join(map(str, sys.version_info[:2]))
    header = [
        "# The image's dependencies, exact versions: made by `python .ci/lock.py` (Python "
        f"{version}),",
        "# checked by `python .ci/lock.py --check` in CI. Do not edit by hand.",
        DIGEST + digest(),
    ]
    LOCK.write_text("\n".join([*header, *sorted(frozen.split(), key=str.lower)]) + "\n", "utf-8")
    print(f"wrote {LOCK.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = problems()
        for p in found:
            print(f"requirements.lock: {p}; run: python .ci/lock.py", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print("usage: python .ci/lock.py [--check]", file=sys.stderr)
        return 2
    make()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
