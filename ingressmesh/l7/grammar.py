"""Strict grammars for label values: one small checker per kind of value.

Every `com.docker.lb.*` value is untrusted text that ends up in an HAProxy config.  Each checker
accepts a narrow, documented shape and raises LabelError naming the label and the value;
nothing it returns can carry a quote, a newline, a `#`, braces or spaces into the config.
"""
from __future__ import annotations

import re

MAX_VALUE = 1024  # longer label values are refused before any parsing
MAX_LIST = 64     # hosts, redirects, paths per label

_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[^/:]+)(:(?P<port>[0-9]{1,5}))?(?P<path>/[^?#]*)?$")
_SECRET = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")  # Docker's secret name grammar, at most 64
# RFC 6265 cookie names are tokens; of the token characters only these can enter a config line
# unquoted and unescaped (`#` starts a comment, `'` quotes, `$` and `%` expand, `&` is kept out too).
_COOKIE = re.compile(r"^[A-Za-z0-9_.+~-]{1,64}$")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class LabelError(ValueError):
    """A label value that does not fit its grammar; the message names the label and the value."""

    def __init__(self, label: str, value: str, reason: str):
        self.label, self.reason = label, reason
        super().__init__(f"label {label}={shown(value)}: {reason}")


def shown(value: str) -> str:
    """A value as it may appear in a log line: repr (so control characters show), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "...'" + f" ({len(value)} chars)"


def checked_text(label: str, value: str) -> str:
    """The common gate: ASCII only, no control characters, bounded length."""
    if len(value) > MAX_VALUE:
        raise LabelError(label, value, f"longer than {MAX_VALUE} characters")
    if not value.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise LabelError(label, value, "only printable ASCII is allowed")
    return value


def host(label: str, value: str) -> str:
    """An RFC 1123 host name, lower-cased (host names are case-insensitive)."""
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253:
        raise LabelError(label, value, "a host name has 1 to 253 characters")
    if not all(_HOST_LABEL.fullmatch(part) for part in name.split(".")):
        raise LabelError(label, value, f"{name!r} is not an RFC 1123 host name "
                         "(letters, digits and '-', dot-separated labels of up to 63)")
    return name


def host_list(label: str, value: str) -> tuple[str, ...]:
    """A comma list of host names, de-duplicated in their first order."""
    items = [item for item in checked_text(label, value).split(",")]
    if len(items) > MAX_LIST:
        raise LabelError(label, value, f"more than {MAX_LIST} hosts")
    hosts = tuple(dict.fromkeys(host(label, item) for item in items))
    return hosts


def port(label: str, value: str) -> int:
    text = checked_text(label, value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise LabelError(label, value, "a port is a number from 1 to 65535")
    return int(text)


def boolean(label: str, value: str) -> bool:
    text = checked_text(label, value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LabelError(label, value, "expected true or false")


def choice(label: str, value: str, allowed: tuple[str, ...]) -> str:
    text = checked_text(label, value).strip().lower()
    if text not in allowed:
        raise LabelError(label, value, "expected " + " or ".join(allowed))
    return text


def name(label: str, value: str) -> str:
    """A Docker object name (network, service cluster): letters, digits, '_', '.', '-'."""
    text = checked_text(label, value).strip()
    if not _NAME.fullmatch(text):
        raise LabelError(label, value, "a name starts with a letter or digit and holds only "
                         "letters, digits, '_', '.' and '-' (at most 63)")
    return text


def path(label: str, value: str) -> str:
    """A URL path prefix from a safe character set, without a trailing slash ('/' stays '/')."""
    text = checked_text(label, value).strip()
    if not _PATH.fullmatch(text) or len(text) > 256:
        raise LabelError(label, value, "a path starts with '/' and holds only letters, digits "
                         "and . _ ~ / - (at most 256)")
    segments = text.split("/")[1:]
    if "" in segments[:-1] or any(s in (".", "..") for s in segments):
        raise LabelError(label, value, "a path has no empty, '.' or '..' segments")
    return text.rstrip("/") or "/"


def url(label: str, value: str) -> tuple[str, str, str]:
    """An http(s) URL: (scheme, host, prefix) where prefix is scheme://host[:port][path]."""
    text = checked_text(label, value).strip()
    found = _URL.fullmatch(text)
    if not found:
        raise LabelError(label, value, f"{text!r} is not an http(s)://host[:port][/path] URL")
    scheme, host_name = found["scheme"], host(label, found["host"])
    if found["port"] is not None:
        port(label, found["port"])
    path_part = found["path"] or ""
    if path_part and path_part != "/":
        path(label, path_part)
    host_port = host_name + (f":{found['port']}" if found["port"] else "")
    return scheme, host_name, f"{scheme}://{host_port}{path_part.rstrip('/')}"


def secret_name(label: str, value: str) -> str:
    """A Docker secret name: Docker's own grammar, at most 64 characters (so never a path)."""
    text = checked_text(label, value).strip()
    if not _SECRET.fullmatch(text):
        raise LabelError(label, value, "a secret name starts with a letter or digit and holds only "
                         "letters, digits, '_', '.' and '-' (at most 64)")
    return text


def cookie_name(label: str, value: str) -> str:
    """A cookie name: an RFC 6265 token limited to letters, digits and _ . + ~ - (at most 64)."""
    text = checked_text(label, value).strip()
    if not _COOKIE.fullmatch(text):
        raise LabelError(label, value, "a cookie name holds only letters, digits and _ . + ~ - "
                         "(RFC 6265 token characters that are safe in a config; at most 64)")
    return text


def path_list(label: str, value: str) -> tuple[str, ...]:
    """A comma list of safe paths, de-duplicated in their first order."""
    items = checked_text(label, value).split(",")
    if len(items) > MAX_LIST:
        raise LabelError(label, value, f"more than {MAX_LIST} paths")
    return tuple(dict.fromkeys(path(label, item) for item in items))
