"""Summarise a py-spy speedscope profile: functions by self time, billhub's by inclusive.

Used by ``bench/link.py --profile``; also runnable on a saved file::

    python bench/speedscope.py build/hub-profile.speedscope.json [--top 10]

Frames are aggregated by (function, file), whatever the line, so a function
sampled on several lines counts once. Self time is where the sample's leaf is;
inclusive time counts a function once per sample it appears in (recursion is not
double-counted). Samples taken while importing (start-up, when py-spy launched
the process) are left out unless ``--with-startup``. Percentages are of the
samples kept; idle time is not sampled unless py-spy ran with ``--idle``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str
    where: str
    weight: float
    share: float


@dataclass(frozen=True)
class Summary:
    samples: int
    seconds: float
    excluded: int
    self_time: list[Row]
    inclusive: list[Row]


#: Samples with one of these frames are start-up (imports), not serving.
STARTUP_FRAMES = frozenset({"_find_and_load", "_call_with_frames_removed"})


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker) :] if marker != "/lib/python3" else path[i + 1 :]
    return path


def summarise(
    path: Path, top: int = 10, *, skip_startup: bool = True, package: str = "billhub/"
) -> Summary:
    """Aggregate a speedscope file; stacks are root first, so the leaf is the last frame."""
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    frames = doc["shared"]["frames"]
    keys = [(f.get("name", "?"), _short(f.get("file", "") or "")) for f in frames]
    startup = {i for i, f in enumerate(frames) if f.get("name") in STARTUP_FRAMES}
    self_w: Counter[tuple[str, str]] = Counter()
    incl_w: Counter[tuple[str, str]] = Counter()
    total = 0.0
    count = excluded = 0
    for prof in doc.get("profiles", []):
        if prof.get("type") != "sampled":
            continue
        weights = prof.get("weights") or [1] * len(prof["samples"])
        for stack, w in zip(prof["samples"], weights, strict=False):
            if not stack:
                continue
            if skip_startup and startup.intersection(stack):
                excluded += 1
                continue
            total += w
            count += 1
            self_w[keys[stack[-1]]] += w
            for k in {keys[i] for i in stack}:
                incl_w[k] += w

    def rows(c: Counter[tuple[str, str]]) -> list[Row]:
        return [
            Row(name, where, w, w / total if total else 0.0)
            for (name, where), w in c.most_common(top)
        ]

    # Inclusive time of the event loop and main() is 100 % and says nothing; keep the
    # package's own functions, minus its entry points.
    mine = Counter(
        {
            k: w
            for k, w in incl_w.items()
            if k[1].startswith(package) and not k[1].endswith("cli.py")
        }
    )
    return Summary(count, total, excluded, rows(self_w), rows(mine))


def render(s: Summary) -> list[str]:
    head = f"  {s.samples} samples ({s.seconds:.2f} s on CPU; idle time is not sampled)"
    if s.excluded:
        head += f", {s.excluded} start-up (import) samples left out"
    out = [head, "  top by self time:"]
    out += [f"    {r.share * 100:5.1f}%  {r.name}  ({r.where})" for r in s.self_time]
    out.append("  top billhub functions by inclusive time (self + callees):")
    out += [f"    {r.share * 100:5.1f}%  {r.name}  ({r.where})" for r in s.inclusive]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--with-startup", action="store_true", help="keep import-time samples")
    args = p.parse_args()
    print("\n".join(render(summarise(args.file, args.top, skip_startup=not args.with_startup))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
