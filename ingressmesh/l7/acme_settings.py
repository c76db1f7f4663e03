"""The `[ACME]` table of l7.toml: which ACME server issues the automatic certificates.

    [ACME]
    DirectoryURL = "https://acme-v02.api.letsencrypt.org/directory"
    Email = "ops@example.org"          # the account's contact (optional)
    CABundle = "/etc/ingressmesh/acme-ca.pem"   # trust this CA for a private ACME server (step-ca...)
    RenewBefore = "30d"                # renew this long before expiry
    EABKeyID = "kid-1"                 # external account binding, for CAs that need one
    EABHMACKey = "zWNDZM6e..."         # its base64url MAC key

Without an `[ACME]` table nothing is issued (settings.py reads `[Extensions]` only, so the
table is read here and the two stay independent).  A bad value is refused naming the key.
"""
from __future__ import annotations

import base64
import binascii
import re
import tomllib
from dataclasses import dataclass
from typing import Optional

from .settings import SettingsError

_DURATION = re.compile(r"^([0-9]{1,6})(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/%\-]*)?$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,253}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]{16,512}=*$")
_KEY_ID = re.compile(r"^[A-Za-z0-9._~\-]{1,256}$")
DAY = 86400.0


@dataclass(frozen=True)
class AcmeSettings:
    directory_url: str
    email: str = ""
    ca_bundle: str = ""  # a PEM file the issuer trusts for the ACME server ("": the system's CAs)
    renew_before: float = 30 * DAY  # seconds before expiry a certificate is renewed
    eab_key_id: str = ""
    eab_hmac_key: str = ""  # base64url, as the CA hands it out

    @property
    def eab(self) -> bool:
        return bool(self.eab_key_id)


_KEYS = {"DirectoryURL": "directory_url", "Email": "email", "CABundle": "ca_bundle",
         "RenewBefore": "renew_before", "EABKeyID": "eab_key_id", "EABHMACKey": "eab_hmac_key"}


def duration(where: str, value) -> float:
    """`90s`, `15m`, `12h` or `30d` in seconds."""
    found = _DURATION.fullmatch(str(value))
    if isinstance(value, bool) or not found or int(found.group(1)) == 0:
        raise SettingsError(f"{where}: {value!r} is not a duration like 12h or 30d")
    return float(int(found.group(1)) * _UNITS[found.group(2)])


def _text(where: str, value, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SettingsError(f"{where}: {value!r} is not {what}")
    return value


def _check(where: str, key: str, value):
    if key == "directory_url":
        return _text(where, value, _URL, "an http(s) URL of an ACME directory")
    if key == "email":
        return _text(where, value, _EMAIL, "an e-mail address")
    if key == "ca_bundle":
        if not isinstance(value, str) or not value.startswith("/") or "\n" in value:
            raise SettingsError(f"{where}: {value!r} is not an absolute path of a PEM file")
        return value
    if key == "renew_before":
        return duration(where, value)
    if key == "eab_key_id":
        return _text(where, value, _KEY_ID, "a key identifier")
    if not isinstance(value, str):
        raise SettingsError(f"{where}: expected the base64url MAC key as a string")
    try:
        if not _B64URL.fullmatch(value):
            raise ValueError(value)
        base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SettingsError(f"{where}: not base64url (the MAC key as the CA hands it out)") from None
    return value


def parse(text: str, source: str = "l7 config") -> Optional[AcmeSettings]:
    """The `[ACME]` table, or None when the file has none."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{source}: not valid TOML: {err}") from None
    table = data.get("ACME")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise SettingsError(f"{source}: ACME is not a table")
    values = {}
    for key, value in table.items():
        if key not in _KEYS:
            raise SettingsError(f"{source}: ACME.{key}: unknown key (known: {', '.join(_KEYS)})")
        values[_KEYS[key]] = _check(f"{source}: ACME.{key}", _KEYS[key], value)
    if "directory_url" not in values:
        raise SettingsError(f"{source}: ACME.DirectoryURL: missing (the ACME server's directory)")
    if bool(values.get("eab_key_id")) != bool(values.get("eab_hmac_key")):
        raise SettingsError(f"{source}: ACME.EABKeyID and ACME.EABHMACKey: an external account binding needs both")
    return AcmeSettings(**values)


def load(path: str) -> Optional[AcmeSettings]:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(), path)
    except OSError as err:
        raise SettingsError(f"{path}: {err.strerror or err}") from None
