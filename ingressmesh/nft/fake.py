"""FakeNft: an in-memory `nft -f -` so the backend and its rules can be tested without root.

It knows exactly the script shapes `transaction.py` emits and the rule shapes `render.py`
emits, validates them as nft 1.0.6 and the kernel do (checked against the real thing in
tests/kernel/test_fake_matches_kernel.py) and refuses anything else with `NftError`, so a
change the kernel would refuse fails a rootless test first.  A script applies to a copy that
replaces the ruleset only when every statement succeeded: atomic, like nft.

Deliberately stricter than nft: addresses must be canonical dotted quads (nft also takes
`010.0.0.1` and host names), ports 1-65535 (nft takes 0), protocols tcp/udp only.
"""
from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from .errors import NftError
from .fake_listing import listing
from .fake_rules import NAME as _NAME, shape_of
from .render import COMMENT_MAX
from .state import FAMILY, TABLE

_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_HOOKS = {"nat": ("prerouting", "input", "output", "postrouting"),
          "filter": ("prerouting", "input", "forward", "output", "postrouting")}
_TYPEOF = {"meta l4proto": "inet_proto", "th dport": "inet_service", "tcp dport": "inet_service",
           "udp dport": "inet_service", "ip daddr": "ipv4_addr", "ip saddr": "ipv4_addr"}
_TYPES = ("inet_proto", "inet_service", "ipv4_addr")
_ENOENT = "Could not process rule: No such file or directory"


@dataclass
class FakeSet:
    name: str
    handle: int
    key_types: tuple
    value_types: tuple = ()  # empty for a set; ("verdict",) for a verdict map
    elements: dict = field(default_factory=dict)  # key tuple -> (value tuple, comment)

    @property
    def is_map(self) -> bool:
        return bool(self.value_types)


@dataclass
class FakeRule:
    text: str  # whitespace-normalised, exactly as the renderer wrote it
    handle: int


@dataclass
class FakeChain:
    name: str
    handle: int
    base: Optional[dict] = None  # {"type", "hook", "prio", "policy"} for a base chain
    rules: list = field(default_factory=list)


@dataclass
class FakeTable:
    name: str
    handle: int
    sets: dict = field(default_factory=dict)
    chains: dict = field(default_factory=dict)
    next_handle: int = 1

    def new_handle(self) -> int:
        self.next_handle += 1
        return self.next_handle - 1


class FakeNft:
    """Implements the NftRunner protocol in memory."""

    def __init__(self) -> None:
        self.tables: dict[str, FakeTable] = {}
        self.table_handles = 0
        self.scripts: list[str] = []  # every script that applied, in order
        self.forgotten: list[str] = []  # every address forget_connections was given

    def table(self, name: str = TABLE) -> Optional[FakeTable]:
        return self.tables.get(name)

    def run_script(self, script: str) -> None:
        work = _Apply(copy.deepcopy(self.tables), self.table_handles)
        for line, text in _statements(script):
            try:
                work.statement(text)
            except NftError as err:
                raise NftError(f"<stdin>:{line}: Error: {err}\n{text.splitlines()[0]}") from None
        self.tables, self.table_handles = work.tables, work.table_handles
        self.scripts.append(script)

    def list_table(self) -> Optional[dict]:
        table = self.table()
        return None if table is None else listing(table)

    def forget_connections(self, addresses: frozenset) -> None:
        self.forgotten.extend(sorted(addresses))


# ---- script structure -------------------------------------------------------------------

def _depth_split(text: str, separators: str) -> list[str]:
    """Split at separators that are outside braces and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        quoted ^= char == '"'
        depth += 0 if quoted else (char == "{") - (char == "}")
        if not quoted and depth == 0 and char in separators:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _statements(script: str) -> list[tuple[int, str]]:
    """Top-level statements with their first line number; a `{ ... }` block spans lines."""
    out, pending, first, depth = [], [], 0, 0
    for number, line in enumerate(script.splitlines(), 1):
        if not pending and not line.strip():
            continue
        first = number if not pending else first
        pending.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            out.append((first, "\n".join(pending).strip()))
            pending = []
    if pending:
        raise NftError(f"<stdin>:{first}: Error: syntax error, unexpected end of file")
    return out


def _block(text: str, head: str) -> tuple[re.Match, str]:
    """Match `head {` at the start of text; return the match and the body inside the braces."""
    match = re.match(head + r"\s*\{", text)
    if not match or not text.endswith("}"):
        raise NftError(f"syntax error: expected `{head} {{ ... }}` in {text[:60]!r}")
    return match, text[match.end():-1]


class _Apply:
    """Applies statements to a working copy of the tables: one transaction."""

    def __init__(self, tables: dict, table_handles: int):
        self.tables, self.table_handles = tables, table_handles

    def statement(self, text: str) -> None:
        flat = " ".join(text.split())
        t = rf"{FAMILY} (?P<table>{_NAME})"  # any other family is an unsupported statement
        if m := re.fullmatch(rf"table {t}", flat):
            self._table(m)
        elif m := re.fullmatch(rf"delete table {t}", flat):
            if self.tables.pop(m["table"], None) is None:
                raise NftError(_ENOENT)
        elif m := re.match(rf"table {t} \{{", flat):
            lines = "\n".join(" ".join(line.split()) for line in text.splitlines())
            self._table_block(self._table(m), _block(lines, rf"table {t}")[1])
        elif m := re.fullmatch(rf"add chain {t} (?P<chain>{_NAME})", flat):
            table = self._existing(m)
            if m["chain"] not in table.chains:
                table.chains[m["chain"]] = FakeChain(m["chain"], table.new_handle())
        elif m := re.fullmatch(rf"add rule {t} (?P<chain>{_NAME}) (?P<rule>.+)", flat):
            table = self._existing(m)
            if m["chain"] not in table.chains:
                raise NftError(f"{_ENOENT}: chain {m['chain']}")
            self._add_rule(table, table.chains[m["chain"]], m["rule"])
        elif m := re.fullmatch(rf"(?P<verb>add|delete) element {t} (?P<set>{_NAME}) \{{(?P<body>.*)\}}", flat):
            table = self._existing(m)
            if m["set"] not in table.sets:
                raise NftError(f"{_ENOENT}: set {m['set']}")
            for item in _depth_split(m["body"], ","):
                self._element(table, table.sets[m["set"]], m["verb"], item)
        else:
            raise NftError(f"unsupported statement (FakeNft knows what transaction.py emits): {flat[:80]!r}")

    def _table(self, m: re.Match) -> FakeTable:
        name = m["table"]
        if name not in self.tables:
            self.table_handles += 1
            self.tables[name] = FakeTable(name, self.table_handles)
        return self.tables[name]

    def _existing(self, m: re.Match) -> FakeTable:
        table = self.tables.get(m["table"])
        if table is None:
            raise NftError(f"{_ENOENT}: table {m['table']}")
        return table

    def _table_block(self, table: FakeTable, body: str) -> None:
        # nft creates a block's chains, then its sets, then its rules; handles follow suit.
        items = [_block(item, rf"(?P<kind>set|map|chain) (?P<name>{_NAME})")
                 for item in _depth_split(body, ";\n")]
        rules = [(m["name"], rule) for m, inner in items if m["kind"] == "chain"
                 for rule in self._chain(table, m["name"], inner)]
        for m, inner in items:
            if m["kind"] != "chain":
                self._declare(table, m["kind"], m["name"], inner)
        for name, rule in rules:
            self._add_rule(table, table.chains[name], rule)

    def _chain(self, table: FakeTable, name: str, inner: str) -> list[str]:
        """Create (or reopen) a chain; returns its rule texts."""
        parts, base = _depth_split(inner, ";\n"), None
        if parts and parts[0].startswith("type "):
            m = re.fullmatch(r"type (\w+) hook (\w+) priority (-?\d+|\w+)", parts.pop(0))
            policy = parts.pop(0) if parts and parts[0].startswith("policy ") else "policy accept"
            prio = m and (int(m[3]) if m[3].lstrip("-").isdigit() else _PRIORITIES.get(m[3]))
            if not m or m[2] not in _HOOKS.get(m[1], ()) or prio is None \
                    or policy not in ("policy accept", "policy drop"):
                raise NftError(f"unsupported base chain declaration in chain {name}")
            base = {"type": m[1], "hook": m[2], "prio": prio, "policy": policy.split()[1]}
        chain = table.chains.setdefault(name, FakeChain(name, 0, base))
        if chain.handle == 0:
            chain.handle = table.new_handle()
        elif chain.base != base:
            raise NftError(f"Could not process rule: File exists: chain {name}")
        return parts

    def _declare(self, table: FakeTable, kind: str, name: str, inner: str) -> None:
        m = re.fullmatch(r"(type|typeof) ([^;:]+?)(?: : ([^;:]+?))?;?", inner.strip())
        if not m or (kind == "map") != bool(m[3]):
            raise NftError(f"unsupported {kind} declaration for {name}: {inner.strip()!r}")
        typeof = m[1] == "typeof"
        keys, values = _types(m[2], typeof), _types(m[3], typeof) if m[3] else ()
        old = table.sets.get(name)
        if old is None:
            table.sets[name] = FakeSet(name, table.new_handle(), keys, values)
        elif (old.key_types, old.value_types) != (keys, values):
            raise NftError(f"Could not process rule: File exists: {kind} {name}")

    def _add_rule(self, table: FakeTable, chain: FakeChain, text: str) -> None:
        text = " ".join(text.split())
        _check_refs(table, text)
        if "{" in text:
            table.new_handle()  # the kernel gives the anonymous set `{ tcp, udp }` a handle
        chain.rules.append(FakeRule(text, table.new_handle()))

    def _element(self, table: FakeTable, fset: FakeSet, verb: str, item: str) -> None:
        key, value, comment = _parse_element(table, fset, item)
        if verb == "delete":
            if value or comment:
                raise NftError("unsupported: delete element takes keys only")
            if key not in fset.elements:
                raise NftError(_ENOENT)
            del fset.elements[key]
        elif fset.is_map and not value:
            raise NftError("Could not process rule: Invalid argument (map element without a value)")
        elif key not in fset.elements:
            fset.elements[key] = (value, comment)
        elif fset.elements[key][0] != value:
            raise NftError("Could not process rule: File exists")
        # else: same key and value again; the kernel accepts it and keeps the first comment.


# ---- types and elements -------------------------------------------------------------------

def _types(text: str, typeof: bool) -> tuple:
    parts = [p.strip() for p in text.split(" . ")]
    if typeof:
        parts = ["integer" if re.fullmatch(r"numgen random mod [1-9]\d*", p) else _TYPEOF.get(p, "?")
                 for p in parts]
    if not all(p in _TYPES or (typeof and p == "integer") for p in parts) and parts != ["verdict"]:
        raise NftError(f"unsupported {'typeof' if typeof else 'type'} {text!r}")
    return tuple(parts)


def _value(kind: str, token: str):
    """One element part, as the Python value the JSON reader produces."""
    if kind == "ipv4_addr" and not _is_ipv4(token):
        raise NftError(f"Could not resolve hostname: {token!r} is not an IPv4 address")
    if kind == "inet_proto" and token not in ("tcp", "udp"):
        raise NftError(f"protocol {token!r} is not tcp or udp")
    if kind in ("ipv4_addr", "inet_proto"):
        return token
    low, high = (1, 65535) if kind == "inet_service" else (0, 2**32 - 1)
    if not re.fullmatch(r"0|[1-9]\d*", token) or not low <= int(token) <= high:
        raise NftError(f"Value {token!r} out of range for {kind} ({low}-{high})")
    return int(token)


def _is_ipv4(token: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(token)) == token
    except ValueError:
        return False


def _parts(types: tuple, text: str) -> tuple:
    tokens = [t.strip() for t in text.split(" . ")]
    if len(tokens) != len(types) or any(not t or " " in t for t in tokens):
        raise NftError(f"{text.strip()!r} does not have the {len(types)} part(s) of {' . '.join(types)}")
    return tuple(_value(kind, token) for kind, token in zip(types, tokens))


def _parse_element(table: FakeTable, fset: FakeSet, item: str) -> tuple[tuple, tuple, str]:
    m = re.fullmatch(r'(?P<key>[^":]+?)(?: comment "(?P<comment>[^"]*)")?(?: : (?P<value>[^":]+))?', item)
    if not m:
        raise NftError(f"syntax error in element {item!r}")
    comment, value = m["comment"] or "", (m["value"] or "").strip()
    if len(comment.encode()) > COMMENT_MAX:
        raise NftError(f"comment too long, {COMMENT_MAX} characters maximum allowed")
    if value and not fset.is_map:
        raise NftError("set is not a map")
    key = _parts(fset.key_types, m["key"])
    if not value:
        return key, (), comment
    if fset.value_types != ("verdict",):
        return key, _parts(fset.value_types, value), comment
    goto = re.fullmatch(rf"goto ({_NAME})", value)
    if not goto:
        raise NftError(f"unsupported verdict {value!r} (the renderer only emits goto)")
    _check_goto(table, goto[1])
    return key, (value,), comment


def _check_goto(table: FakeTable, name: str) -> None:
    chain = table.chains.get(name)
    if chain is None:
        raise NftError(f"{_ENOENT}: chain {name}")
    if chain.base is not None:
        raise NftError(f"Could not process rule: Operation not supported: goto base chain {name}")


def _check_refs(table: FakeTable, text: str) -> None:
    m, sets, _ = shape_of(text)
    found = m.groupdict()
    if found.get("addr"):
        _value("ipv4_addr", found["addr"])
    if found.get("mod") and int(found["mod"]) == 0:
        raise NftError("Could not process rule: Numerical result out of range")
    if found.get("chain"):
        _check_goto(table, found["chain"])
    for group, kind in sets.items():
        fset = table.sets.get(found[group])
        if fset is None:
            raise NftError(f"{_ENOENT}: set @{found[group]}")
        if (fset.key_types, fset.value_types) != kind:
            raise NftError(f"datatype mismatch for @{fset.name}")


