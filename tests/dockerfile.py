"""What the repository's Dockerfile says its image runs, read from the file's own text.

>>> image = read_image()
>>> image.command        # ENTRYPOINT + CMD
['nvp-adapter', 'serve']

Only what the tests need is parsed: instructions joined across ``\\`` continuations, comment lines
dropped, the last stage's ENV, USER, ENTRYPOINT, CMD and HEALTHCHECK (JSON forms only), and the
sources every stage copies from the build context. Anything else in the form these expect is an
error, not a guess.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword in upper case and the rest of its logical line."""

    keyword: str
    arguments: str


@dataclass(frozen=True)
class Image:
    """The runtime stage as the Dockerfile declares it."""

    env: dict[str, str]
    """ENV, in order, as written: ``$VAR`` references are left for the reader to resolve."""
    user: str
    command: list[str]
    """ENTRYPOINT followed by CMD, as ``docker run IMAGE`` runs them."""
    healthcheck: list[str]
    healthcheck_options: dict[str, str]
    """``--interval``, ``--timeout``, ... of HEALTHCHECK, as written (``10s``)."""
    context_sources: list[str]
    """What the build copies from the build context (``COPY`` without ``--from``), every stage."""
    copied_from_stages: dict[str, str]
    """In the runtime stage: destination -> source of each ``COPY --from``."""


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, with continuation lines joined and comment lines dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return result


def stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage; each group starts with its FROM."""
    groups: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def _json_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)
    assert isinstance(value, list), f"{instruction.keyword} is not in JSON form"
    assert all(isinstance(item, str) for item in value), instruction
    return [str(item) for item in value]


def _env(arguments: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for token in shlex.split(arguments):
        name, sep, value = token.partition("=")
        assert sep, f"ENV {token!r}: only the KEY=VALUE form is read"
        pairs[name] = value
    return pairs


def _healthcheck(arguments: str) -> tuple[dict[str, str], list[str]]:
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])", arguments)
    assert match, f"HEALTHCHECK {arguments!r}: expected options, then CMD in JSON form"
    options = dict(option.lstrip("-").split("=", 1) for option in match[1].split())
    return options, _json_form(Instruction("HEALTHCHECK", match[2]))


def read_image(path: Path = DOCKERFILE) -> Image:
    """The runtime (last) stage of the Dockerfile at ``path``."""
    groups = stages(path.read_text())
    assert groups, "no FROM in the Dockerfile"
    context_sources = [
        source
        for group in groups
        for instruction in group
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--")
        for source in shlex.split(instruction.arguments)[:-1]
    ]
    env: dict[str, str] = {}
    user = ""
    entrypoint: list[str] = []
    cmd: list[str] = []
    healthcheck: list[str] = []
    options: dict[str, str] = {}
    copied: dict[str, str] = {}
    for instruction in groups[-1]:
        if instruction.keyword == "ENV":
            env.update(_env(instruction.arguments))
        elif instruction.keyword == "USER":
            user = instruction.arguments
        elif instruction.keyword == "ENTRYPOINT":
            entrypoint = _json_form(instruction)
        elif instruction.keyword == "CMD":
            cmd = _json_form(instruction)
        elif instruction.keyword == "HEALTHCHECK":
            options, healthcheck = _healthcheck(instruction.arguments)
        elif instruction.keyword == "COPY" and instruction.arguments.startswith("--from="):
            _, source, destination = shlex.split(instruction.arguments)
            copied[destination] = source
    return Image(env, user, entrypoint + cmd, healthcheck, options, context_sources, copied)
