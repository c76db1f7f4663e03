"""The shared token: read from a file, checked, never weak."""
from __future__ import annotations

import logging
import os
import stat

import pytest

from ingressmesh.daemon.token import MIN_LENGTH, TokenError, generate_token, load_token, write_token


def _file(tmp_path, content, mode=0o600):
    path = tmp_path / "token"
    path.write_text(content)
    os.chmod(path, mode)
    return str(path)


def test_loads_and_strips(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_token(_file(tmp_path, "  s3cret-s3cret-s3cret\n")) == "s3cret-s3cret-s3cret"
    assert caplog.text == ""


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    (" \n\t", "empty"),
    ("short", "5 characters, need at least 16"),
    ("two words but long enough", "whitespace"),
])
def test_refuses_weak_tokens(tmp_path, content, message):
    path = _file(tmp_path, content)
    with pytest.raises(TokenError, match=message) as info:
        load_token(path)
    assert path in str(info.value)


def test_missing_file_named(tmp_path):
    with pytest.raises(TokenError, match=f"{tmp_path}/nope: cannot read it"):
        load_token(str(tmp_path / "nope"))


def test_warns_when_group_or_world_readable(tmp_path, caplog):
    path = _file(tmp_path, "x" * 32, mode=0o644)
    with caplog.at_level(logging.WARNING):
        assert load_token(path) == "x" * 32
    assert path in caplog.text and "0644" in caplog.text


def test_generate_and_write(tmp_path):
    token = generate_token()
    assert len(token) >= MIN_LENGTH and token != generate_token()
    path = str(tmp_path / "new")
    write_token(path, token)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_token(path) == token
    with pytest.raises(FileExistsError):
        write_token(path, generate_token())  # never overwrites a secret
