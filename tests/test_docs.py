"""README and ``docs/`` cannot rot: their marked commands run, their links lead somewhere.

- A fenced ``sh`` block right after ``<!-- run -->`` is run as written, from the repository's
  root, with ``.venv/bin`` first on ``PATH`` and no ``NVP_ADAPTER_*`` or proxy variable set, and
  must exit 0. After ``<!-- run: adapter -->`` an ``nvp-adapter serve`` is started first on a free
  loopback port, and the block's ``127.0.0.1:50051`` is pointed at it.
- Every relative link names a file that exists and, where it names a heading of a Markdown file,
  a heading that exists (GitHub's anchors).
- The embedded gateway's ``curl`` example (between ``<!-- gateway-curl -->`` markers) answers
  as the page shows.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapter.config import DEMO_MERCHANT, GatewaySettings
from adapter.core import nvp
from tests.test_cli import Start, nvp_adapter

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
GATEWAY_PAGE = ROOT / "docs" / "embedded-gateway.md"
DEFAULT_TARGET = "127.0.0.1:50051"  # the address a block marked ``adapter`` names
RUN_TIMEOUT = 90.0  # far above what a marked block takes; only there so that a hang fails
MAX_README_LINES = 400

_MARKED = re.compile(
    r"^<!-- run(?:: (?P<needs>[a-z-]+))? -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S
)
_MARKER = re.compile(r"^<!-- run\b.*-->$", re.M)
_FENCE = re.compile(r"^ *```.*?^ *```$", re.M | re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
_FENCED = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
_SCRUBBED = re.compile(r"(?i)^(nvp_adapter_.*|https?_proxy|all_proxy|grpc_proxy|no_proxy)$")
NEEDS = {None, "adapter"}


@dataclass(frozen=True)
class Block:
    """A marked command block: where it is, what it needs started first, and its text."""

    page: Path
    line: int
    needs: str | None
    lang: str
    body: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def marked_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` that a ``<!-- run -->`` marker precedes."""
    text = page.read_text()
    return [
        Block(
            page,
            text.count("\n", 0, match.start()) + 1,
            match["needs"],
            match["lang"],
            match["body"],
        )
        for match in _MARKED.finditer(text)
    ]


BLOCKS = [block for page in PAGES for block in marked_blocks(page)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a page, outside fenced blocks; repeats get ``-1``, ``-2``..."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """The relative links of ``page`` (its ``text``, read from it unless given), outside fenced
    blocks, that lead nowhere."""
    text = page.read_text() if text is None else text
    broken = []
    for target in _LINK.findall(_FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        if not path_part:
            if anchor not in anchors(text):
                broken.append(f"{target}: no heading #{anchor} here")
            continue
        linked = (page.parent / path_part).resolve()
        if not linked.is_relative_to(ROOT) or not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    return broken


def environment() -> dict[str, str]:
    """This environment less what would change the configuration, with the venv first on PATH."""
    env = {key: value for key, value in os.environ.items() if not _SCRUBBED.match(key)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def run_block(command: str) -> tuple[int, str]:
    """Run ``command`` with bash, stopping at the first failing line; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-o",
        "pipefail",
        "-c",
        command,
        cwd=ROOT,
        env=environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def test_the_readme_is_an_entry_point() -> None:
    """README stays a door, not the house: at most 400 lines, the rest in ``docs/``."""
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README has {lines} lines"


def test_every_marker_marks_a_runnable_sh_block() -> None:
    """Each ``<!-- run -->`` marker is followed at once by a fenced ``sh`` block and asks only
    for what the test can start; README has marked blocks of its own."""
    for page in PAGES:
        markers = _MARKER.findall(page.read_text())
        blocks = marked_blocks(page)
        assert len(blocks) == len(markers), f"{page}: a marker not right before a fence"
        for block in blocks:
            assert block.lang == "sh", f"{block.name}: a ```{block.lang} block, not ```sh"
            assert block.needs in NEEDS, f"{block.name}: unknown need {block.needs!r}"
            assert block.body.strip(), f"{block.name}: an empty block"
    assert any(block.page == README for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
async def test_a_marked_command_runs_as_written(block: Block, nvp_adapter: Start) -> None:
    """The block, run as written (an adapter's address put in where it needs one), exits 0."""
    command = block.body
    if block.needs == "adapter":
        assert DEFAULT_TARGET in command, f"{block.name} does not name {DEFAULT_TARGET}"
        adapter = await nvp_adapter("serve", "--listen", "127.0.0.1:0", env=environment())
        command = command.replace(DEFAULT_TARGET, adapter.address)
    code, output = await run_block(command)
    assert code == 0, f"{block.name} exited {code}:\n{command}\n{output}"


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_lead_to_a_file_and_a_heading(page: Path) -> None:
    """Every relative link names a file of the repository that exists, and a heading of it
    that exists when the link names one."""
    assert broken_links(page) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading() -> None:
    """The check is not vacuous: a link to no file, or to a heading that is not there, is
    reported, while one to a heading that is there is not, nor a link inside a fenced block."""
    assert "the-checkout-flow" in anchors((ROOT / "docs" / "api.md").read_text())
    assert slug("Secrets: what is removed, and what is never touched") == (
        "secrets-what-is-removed-and-what-is-never-touched"
    )
    assert slug("`nvp-adapter gateway` over HTTP") == "nvp-adapter-gateway-over-http"
    probe = (
        "[a](api.md#the-checkout-flow) [b](nothing.md) [c](api.md#nowhere) [d](#here)\n"
        "[e](#there) [f](https://example.com/x.md)\n\n## Here\n\n```sh\n[g](fenced.md)\n```\n"
    )
    assert broken_links(ROOT / "docs" / "probe.md", probe) == [
        "nothing.md: no such file",
        "api.md#nowhere: no heading #nowhere in docs/api.md",
        "#there: no heading #there here",
    ]


def gateway_block(name: str) -> dict[str, str]:
    """The fenced blocks between the gateway page's ``<!-- name -->`` markers, by language."""
    text = GATEWAY_PAGE.read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    assert start in text, f"{GATEWAY_PAGE.name} has no {start} marker"
    assert end in text, f"{GATEWAY_PAGE.name} has no {end} marker"
    section = text.split(start, 1)[1].split(end, 1)[0]
    return dict(_FENCED.findall(section))


def require_curl() -> None:
    """A clear failure, never a skip, where curl is missing: the example would go unchecked."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not on PATH: the gateway page's example runs it; install curl")


async def test_the_curl_call_of_the_gateway_answers_as_shown(nvp_adapter: Start) -> None:
    """The gateway page's `curl` CREATE_SESSION against `nvp-adapter gateway`, run as written
    (the default address replaced by the test's free port), answers as the page shows: the same
    fields, the same values but the session id and version, which are new each time and of
    their form."""
    require_curl()
    blocks = gateway_block("gateway-curl")
    command, shown = blocks["sh"], blocks["text"].strip()
    default = GatewaySettings().listen
    assert f"http://{default}/" in command
    gateway = await nvp_adapter("gateway", "--listen", "127.0.0.1:0")
    proc = await asyncio.create_subprocess_shell(
        command.replace(default, gateway.address),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, err) == (0, b""), err
    answer, expected = nvp.decode(out.strip()), nvp.decode(shown.encode())
    assert answer.keys() == expected.keys()
    fresh = {"session.id", "session.version"}
    assert {k: v for k, v in answer.items() if k not in fresh} == {
        k: v for k, v in expected.items() if k not in fresh
    }
    assert expected["merchant"] == DEMO_MERCHANT
    for fields in (answer, expected):
        assert re.fullmatch(r"SESSION0002[0-9A-Z]{20}", fields["session.id"]), fields
        assert re.fullmatch(r"[0-9a-f]{10}", fields["session.version"]), fields
