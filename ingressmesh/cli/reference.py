"""The docs' CLI reference page rendered from the click commands (scripts/cli-reference writes it).

Rendered at a fixed width so the page does not depend on the terminal it was made in.
"""
from __future__ import annotations

import click

from . import main
from .examples import walk

WIDTH = 100
HEADER = """# CLI reference

Generated from the click commands by `scripts/cli-reference` (`make cli-docs`); do not edit by
hand: `tests/unit/test_cli_reference.py` fails when this page and `ingressmesh … --help` differ.
Every command ends its help with one example. Namespaces are names under `/run/netns` or paths;
see [Operations](operations.md) for what to run when.

"""


def _help(path: str, command: click.Command) -> str:
    """`path --help` as click prints it, at WIDTH columns."""
    parent = None
    for name in path.split()[:-1]:
        parent = click.Context(click.Group(name), info_name=name, parent=parent,
                               terminal_width=WIDTH, max_content_width=WIDTH)
    ctx = click.Context(command, info_name=path.split()[-1], parent=parent,
                        terminal_width=WIDTH, max_content_width=WIDTH)
    return command.get_help(ctx)


def render() -> str:
    """The whole page: a section per command, parents before their sub-commands."""
    parts = [HEADER]
    for path, command in walk(main):
        parts.append(f"## `{path}`\n\n```text\n{_help(path, command)}\n```\n\n")
    return "".join(parts).rstrip("\n") + "\n"
