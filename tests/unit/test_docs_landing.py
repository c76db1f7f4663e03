"""The README stays a landing page: short, and pointing at every page of the docs site's nav."""
from __future__ import annotations

import os
import re

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        for value in item.values():
            pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _mkdocs_nav() -> list[str]:
    class Loader(yaml.SafeLoader):
        """mkdocs.yml names Python objects (!!python/name:…); the nav needs none of them."""
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as handle:
        return _nav_pages(yaml.load(handle, Loader=Loader)["nav"])


def test_readme_is_short_and_links_every_docs_page():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert len(readme.splitlines()) <= 150
    linked = set(re.findall(r"\]\(docs/([^)#]+)", readme))
    wanted = {page for page in _mkdocs_nav() if page not in ("index.md", "swarm-findings.md")}
    assert wanted - linked == set(), f"pages of the docs nav the README does not point at: {wanted - linked}"
    for page in linked:
        assert os.path.exists(os.path.join(ROOT, "docs", page)), f"README links docs/{page}, which does not exist"


def test_the_two_commands_are_in_the_readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert "sudo make lab" in readme and "sudo make test" in readme
