"""The README fits one screen and opens with the two commands a newcomer runs (the install-and-run line and
the test command .ci/run runs); the rest lives in docs/, one topic a page, every page on the README's map;
every relative link in README.md and docs/*.md resolves, anchors included, and every project file or test a
page names exists."""
import json
import re
from pathlib import Path

from imports import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 200
INSTALL = 'python3.11 -m venv .venv && .venv/bin/pip install -c requirements.lock -e ".[test]" && PATH="$PWD/.venv/bin:$PATH" dvc repro'
TESTS = ".venv/bin/python -m pytest"

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
PROJECT_PATH = re.compile(r"(?<![\w/.$<-])((?:bench|tests|tasks|flows|deploy|\.ci)/[\w/.-]*\w)")
TEST_ID = re.compile(r"(tests/\w+\.py)::(\w+)")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code spans blanked (a link may still wrap one)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(INLINE_CODE.sub(lambda m: "code", line))
    return lines


def code_blocks(text: str) -> list[str]:
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def links(text: str) -> list[str]:
    found = []
    for line in prose(text):
        found += LINK.findall(line)
        found += REFERENCE.findall(line)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def heading_anchors(path: Path) -> set[str]:
    """Anchors from the raw heading lines (code spans kept as their text, as GitHub does)."""
    seen: dict[str, int] = {}
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def test_the_readme_fits_one_screen():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines (at most {MAX_README_LINES}): move the detail to a docs/*.md page and map it")


def test_the_readme_opens_with_the_install_and_test_commands_that_ci_runs():
    text = README.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    assert blocks[0].strip() == INSTALL, "the README's first code block is the install-and-run line"
    assert blocks[1].strip() == TESTS, "the README's second code block is the test command"
    before_install = text[:text.index(INSTALL)]
    took = re.search(r"\*\*(\d+) min on (\d+) cores\*\*", before_install)
    assert took, "say how long the whole DAG takes, in bold: the release run's measured minutes"
    run = json.loads((REPO / "reports/bench/release_run.json").read_text())
    assert (int(took[1]), int(took[2])) == (round(run["dag_seconds"] / 60), run["machine"]["cpus"]), \
        "the README's time is reports/bench/release_run.json's"
    assert f"{run['dag_seconds']:,.0f} s" in before_install
    assert "## Your own photos in 5 minutes" in text
    assert "TLPIPE_MIRROR=../shared/data" in text, "the README keeps the mirror line"
    ci = [ln.strip() for ln in (REPO / ".ci/run").read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert ci[-1] == TESTS, ".ci/run ends with the README's test command"
    assert any('-c requirements.lock -e ".[test]"' in ln for ln in ci), ".ci/run installs as the README does"


def test_the_readme_maps_every_docs_page():
    mapped = {(REPO / t.partition("#")[0]).resolve() for t in links(README.read_text(encoding="utf-8"))
              if t.startswith("docs/")}
    pages_there = {p.resolve() for p in DOCS.glob("*.md")}
    missing = sorted(str(p.relative_to(REPO)) for p in mapped - pages_there)
    unmapped = sorted(str(p.relative_to(REPO)) for p in pages_there - mapped)
    assert not missing, f"the README's map links pages that do not exist: {missing}"
    assert not unmapped, f"docs pages the README's map does not link (add a row): {unmapped}"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = {str(p.relative_to(REPO)): b for p in pages() if (b := broken_links(p))}
    assert not broken, f"broken links: {broken}"


def test_every_project_file_and_test_a_page_names_exists():
    """The commands and pointers in the pages name bench scripts, tests and modules: they must be there."""
    missing = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for path in PROJECT_PATH.findall(text):
            if not (REPO / path).exists():
                missing.append(f"{page.name}: {path}")
        for path, name in TEST_ID.findall(text):
            if (REPO / path).exists() and not re.search(rf"def {name}\b", (REPO / path).read_text()):
                missing.append(f"{page.name}: {path}::{name}")
    assert not missing, f"named in the docs but not in the project: {missing}"


def test_the_link_check_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Top `code` (one)\n\n## Two\n\n## Two\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](a.md) [ok](a.md#top-code-one) [ok](a.md#two-1) [ok](#here) [web](https://x.org/y)\n"
                    "`[in code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n# Here\n"
                    "[bad](missing.md) [bad](a.md#three)\n", encoding="utf-8")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "a.md#three"]
