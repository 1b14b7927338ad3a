"""The repository explains itself: its contracts are in it, and every pointer resolves.

An operator reading a fresh clone follows links and "see ..." pointers; each must land
on a file of the repository, and the contracts cited as "LINK-SPEC §n" and
"BILLERS §n" must have those sections.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from billhub.iso8583 import codes

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "billhub.example.toml",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("specs/*.md"),
        *ROOT.glob("certs.example/*.md"),
    ]
)
SOURCES = sorted(ROOT.glob("src/billhub/**/*.py"))
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add("#" + re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands_in_the_repository(doc: Path) -> None:
    text = doc.read_text("utf-8")
    for target, anchor in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        dest = (doc.parent / target).resolve()
        assert dest.exists(), f"{doc.relative_to(ROOT)} links to {target}, which is missing"
        assert ROOT in dest.parents or dest == ROOT, f"{target} leaves the repository"
        if anchor and dest.suffix == ".md":
            assert anchor in _heading_anchors(dest), f"{target}{anchor}: no such heading"


@pytest.mark.parametrize("path", DOCS + SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    text = path.read_text("utf-8")
    assert "shared/specs" not in text, f"{path.relative_to(ROOT)} points outside the repository"
    for named in re.findall(r"specs/[\w.-]+\.(?:md|toml)", text):
        assert (ROOT / named).exists(), f"{path.relative_to(ROOT)} names {named}, missing"


def _sections(path: Path) -> set[str]:
    """Section numbers of a contract: "## 6. Flows" gives 6, "### 6.3 ..." gives 6.3."""
    found = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", path.read_text("utf-8"), re.M)
    return set(found)


def test_every_cited_section_of_the_contracts_exists() -> None:
    link = _sections(ROOT / "specs" / "LINK-SPEC.md")
    billers = _sections(ROOT / "specs" / "BILLERS.md")
    assert {"1", "2", "3", "4", "5", "6.1", "6.2", "6.3", "6.4", "6.5", "7"} <= link
    assert {"1", "2", "3"} <= billers
    cite = re.compile(r"(LINK-SPEC|BILLERS)(?:\.md)?,? (?:§|section )?(\d+(?:\.\d+)?)")
    for path in DOCS + SOURCES:
        for name, number in cite.findall(path.read_text("utf-8")):
            have = link if name == "LINK-SPEC" else billers
            assert number in have, f"{path.relative_to(ROOT)} cites {name} {number}: no such"


def test_the_response_code_table_has_every_code_the_hub_answers() -> None:
    table = (ROOT / "specs" / "response-codes.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `(\d\d)` \|", table, re.M))
    source = Path(codes.__file__).read_text("utf-8")
    block = source.split("# -- DE 39 response codes")[1].split("# --")[0]
    answered = set(re.findall(r'^[A-Z_]+: Final = "(\d\d)"', block, re.M))
    assert len(answered) >= 14
    assert answered == rows
    spec = (ROOT / "specs" / "LINK-SPEC.md").read_text("utf-8")
    assert rows == set(re.findall(r"^\| `(\d\d)` \|", spec, re.M)), "same codes as LINK-SPEC §5"


def test_the_demo_legend_points_at_the_response_code_table() -> None:
    demo = (ROOT / "src" / "billhub" / "app" / "demo.py").read_text("utf-8")
    assert "specs/response-codes.md" in demo
