"""The docs' CLI reference is what the click commands print, and every command has an example."""
from __future__ import annotations

import os
import subprocess
import sys

from ingressmesh.cli import main
from ingressmesh.cli.examples import EXAMPLES, walk
from ingressmesh.cli.reference import render

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_every_command_has_one_example_in_its_help():
    paths = [path for path, _ in walk(main)]
    missing = [path for path in paths if path not in EXAMPLES]
    assert not missing, f"commands without an example in ingressmesh/cli/examples.py: {missing}"
    unknown = sorted(set(EXAMPLES) - set(paths))
    assert not unknown, f"examples for commands that do not exist: {unknown}"
    for path, command in walk(main):
        assert command.epilog and EXAMPLES[path] in command.epilog, path


def test_the_example_is_in_the_printed_help():
    out = subprocess.run([sys.executable, "-m", "ingressmesh", "l7", "deploy", "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Example:" in out and "ingressmesh l7 deploy --config l7.toml" in out


def test_docs_cli_page_matches_the_click_commands():
    with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == render(), ("docs/cli.md differs from the click commands' help: "
                                   "run scripts/cli-reference (make cli-docs) and commit docs/cli.md")
