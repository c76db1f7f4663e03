"""FakeNft refuses what nft/the kernel refuse, accepts what they accept, and is atomic.

Expected values are copied from what nft 1.0.6 printed on this machine for the same
scripts; tests/kernel/test_fake_matches_kernel.py re-checks them against the kernel.
"""
from __future__ import annotations

import pytest

from ingressmesh.nft import transaction
from ingressmesh.nft.backend import NftError
from ingressmesh.nft.fake import FakeNft
from ingressmesh.nft.render import desired_state

T = "ip ingressmesh"


@pytest.fixture
def loaded(swarm, fake) -> FakeNft:
    """The Fake holding node n1's lb table: web .20/.21 active, api without tasks."""
    tasks = [swarm.task("t20", "web", "n1", 20), swarm.task("t21", "web", "n2", 21)]
    fake.run_script(transaction.full(desired_state(swarm.plan(tasks, "lb:appnet"))).script)
    return fake


def _entry(document: dict, kind: str, name: str) -> dict:
    return next(e[kind] for e in document["nftables"] if kind in e and e[kind]["name"] == name)


def test_nothing_is_listed_before_a_table_exists(fake):
    assert fake.list_table() is None
    fake.run_script(transaction.cleanup_script())  # what `cleanup` sends is fine on an empty ruleset
    assert fake.list_table() is None


def test_the_listing_has_the_shape_nft_prints(loaded):
    doc = loaded.list_table()
    kinds = [next(iter(e)) for e in doc["nftables"]]
    assert kinds[:2] == ["metainfo", "table"]
    assert doc["nftables"][0]["metainfo"]["version"] == "1.0.6"
    first_chain, first_rule = kinds.index("chain"), kinds.index("rule")
    assert set(kinds[2:first_chain]) == {"set", "map"}
    assert set(kinds[first_chain:first_rule]) == {"chain"} and set(kinds[first_rule:]) == {"rule"}
    backends = _entry(doc, "map", "vip_backends")
    assert (backends["type"], backends["map"]) == (["ipv4_addr", "integer"], "ipv4_addr")
    assert backends["elem"][0] == [{"elem": {"val": {"concat": ["10.0.1.10", 0]}, "comment": "web t20"}},
                                   "10.0.1.20"]
    assert _entry(doc, "map", "vip_services")["elem"] == [
        [{"elem": {"val": "10.0.1.10", "comment": "web"}}, {"goto": {"target": "pick_vip_2"}}]]
    assert _entry(doc, "set", "vip_rejects") == {
        "family": "ip", "name": "vip_rejects", "table": "ingressmesh", "type": "ipv4_addr",
        "handle": _entry(doc, "set", "vip_rejects")["handle"],
        "elem": [{"elem": {"val": "10.0.1.11", "comment": "api"}}]}
    prerouting = _entry(doc, "chain", "prerouting")
    assert (prerouting["type"], prerouting["hook"], prerouting["prio"], prerouting["policy"]) == (
        "nat", "prerouting", -100, "accept")
    rules = [e["rule"] for e in doc["nftables"] if "rule" in e]
    assert [r["expr"] for r in rules if r["chain"] == "reject_new"] == [
        [{"reject": {"type": "tcp reset"}}], [{"reject": {"type": "icmp", "expr": "port-unreachable"}}]]
    assert [r["expr"] for r in rules if r["chain"] == "pick_vip_2"] == [[{"dnat": {"addr": {"map": {
        "key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}},
                           {"numgen": {"mode": "random", "mod": 2, "offset": 0}}]},
        "data": "@vip_backends"}}}}]]


def test_elements_hold_the_value_types_the_reader_produces(swarm, fake):
    fake.run_script(transaction.full(desired_state(swarm.plan([swarm.task("t20", "web", "n1", 20)], "ingress"))).script)
    table = fake.table()
    assert table.sets["port_backends"].elements[("tcp", 8080, 0)] == (("10.255.0.20",), "web t20")
    assert table.sets["port_targets"].elements[("udp", 5353)] == ((53,), "web")
    assert table.sets["port_services"].elements[("tcp", 8080)] == (("goto pick_port_1",), "web")


REFUSED = [
    (f"add element {T} nosuch {{ 10.0.0.1 }}", "No such file"),
    (f"add element {T} vip_rejects {{ 10.0.1.300 }}", "IPv4"),
    (f"add element {T} vip_rejects {{ 10.0.1 }}", "IPv4"),
    (f"add element {T} vip_rejects {{ 010.0.1.1 }}", "IPv4"),
    (f"add element {T} port_rejects {{ tcp . 0 }}", "out of range"),
    (f"add element {T} port_rejects {{ tcp . 65536 }}", "out of range"),
    (f"add element {T} port_rejects {{ tcp . http }}", "out of range"),
    (f"add element {T} port_rejects {{ sctp . 80 }}", "tcp or udp"),
    (f"add element {T} port_rejects {{ tcp }}", "part"),
    (f"add element {T} vip_rejects {{ 10.0.0.1 . 5 }}", "part"),
    (f"add element {T} vip_rejects {{ 10.0.0.1 : 5 }}", "not a map"),
    (f"add element {T} vip_backends {{ 10.0.0.1 . 0 }}", "without a value"),
    (f"add element {T} vip_backends {{ 10.0.0.1 . 4294967296 : 10.0.0.2 }}", "out of range"),
    (f"add element {T} vip_services {{ 10.0.0.1 : goto nochain }}", "No such file"),
    (f"add element {T} vip_services {{ 10.0.0.1 : goto prerouting }}", "Operation not supported"),
    (f"add element {T} vip_services {{ 10.0.0.1 : accept }}", "only emits goto"),
    (f'add element {T} vip_rejects {{ 10.0.0.1 comment "{"x" * 129}" }}', "comment too long"),
    (f"add element {T} vip_backends {{ 10.0.1.10 . 0 : 10.0.1.99 }}", "File exists"),
    (f"add element {T} vip_backends {{ 10.9.0.9 . 1 : 1.2.3.4, 10.9.0.9 . 1 : 1.2.3.5 }}", "File exists"),
    (f"delete element {T} vip_rejects {{ 10.9.9.9 }}", "No such file"),
    (f"delete element {T} vip_backends {{ 10.0.1.10 . 0 : 10.0.1.20 }}", "keys only"),
    (f"add rule {T} prerouting counter accept", "unsupported rule"),
    (f"add rule {T} nochain reject", "No such file"),
    (f"add rule {T} pick_vip_2 dnat ip to ip daddr . numgen random mod 2 map @port_targets", "datatype mismatch"),
    (f"add rule {T} pick_vip_2 dnat ip to ip daddr . numgen random mod 0 map @vip_backends", "out of range"),
    (f"add rule {T} pick_vip_2 dnat ip to ip daddr . numgen random mod 2 map @nosuch", "No such file"),
    (f"add rule {T} prerouting ct status dnat snat ip to 10.0.1.256", "IPv4"),
    (f"add rule {T} filter_input ct state new meta l4proto {{ tcp, udp }} ip daddr @vip_rejects goto prerouting",
     "Operation not supported"),
    (f"table {T} {{\n  set published {{ type ipv4_addr; }}\n}}", "File exists"),
    (f"table {T} {{\n  set extra {{ type ether_addr; }}\n}}", "unsupported type"),
    (f"table {T} {{\n  chain extra {{ type route hook output priority 0; }}\n}}", "base chain"),
    (f"table {T} {{\n  flowtable ft {{ hook ingress priority 0; }}\n}}", "syntax error"),
    (f"table {T} {{\n", "end of file"),
    ("delete table ip nosuch", "No such file"),
    ("flush ruleset", "unsupported statement"),
    ("add element ip6 ingressmesh vip_rejects { 10.0.0.1 }", "unsupported statement"),
    ("insert rule ip ingressmesh prerouting reject", "unsupported statement"),
    ("delete chain ip ingressmesh pick_vip_2", "unsupported statement"),
    # Atomic: the first statement is fine, the second is not, so neither applies.
    (f'add element {T} vip_rejects {{ 10.0.0.7 comment "ok" }}\ndelete table {T}\n'
     f"add element {T} vip_rejects {{ 10.0.0.300 }}", "No such file"),
    (f'add element {T} vip_rejects {{ 10.0.0.7 comment "ok" }}\nadd element {T} vip_rejects {{ 10.0.0.300 }}',
     "<stdin>:2: Error: .*IPv4"),
]


@pytest.mark.parametrize("script,message", REFUSED, ids=[f"{i:02}-{m.split()[0]}" for i, (_, m) in enumerate(REFUSED)])
def test_refused_scripts_change_nothing(loaded, script, message):
    before, scripts = loaded.list_table(), list(loaded.scripts)
    with pytest.raises(NftError, match=message):
        loaded.run_script(script + "\n")
    assert loaded.list_table() == before
    assert loaded.scripts == scripts


def test_what_the_kernel_accepts_is_accepted(loaded):
    loaded.run_script(
        f'add element {T} vip_rejects {{ 10.0.0.1 comment "{"x" * 128}" }}\n'
        f"add element {T} vip_backends {{ 10.9.0.9 . 4294967295 : 1.2.3.4, 10.9.0.9 . 4294967295 : 1.2.3.4 }}\n"
        # The same key and value again: accepted, and the first comment stays.
        f'add element {T} vip_backends {{ 10.0.1.10 . 0 comment "other" : 10.0.1.20 }}\n'
        # Delete and re-add one key with a new value in one transaction.
        f"delete element {T} vip_backends {{ 10.0.1.10 . 1 }}\n"
        f'add element {T} vip_backends {{ 10.0.1.10 . 1 comment "web t25" : 10.0.1.25 }}\n'
        f"add chain {T} pick_vip_2\n")
    elements = loaded.table().sets["vip_backends"].elements
    assert elements[(("10.0.1.10", 0))] == (("10.0.1.20",), "web t20")
    assert elements[(("10.0.1.10", 1))] == (("10.0.1.25",), "web t25")
    assert elements[("10.9.0.9", 4294967295)] == (("1.2.3.4",), "")
    assert len(loaded.table().chains["pick_vip_2"].rules) == 1


def test_a_table_block_adds_a_chain_to_an_existing_table(loaded):
    rule = "dnat ip to meta l4proto . th dport . numgen random mod 3 map @port_backends" \
           " : meta l4proto . th dport map @port_targets"
    loaded.run_script(f"table {T} {{\n  chain pick_port_3 {{ {rule}; }}\n}}\n")
    assert [r.text for r in loaded.table().chains["pick_port_3"].rules] == [rule]
    assert loaded.table().sets["vip_backends"].elements  # nothing else was touched


def test_a_full_rebuild_replaces_everything(swarm, loaded):
    tasks = [swarm.task("t30", "web", "n1", 30)]
    loaded.run_script(transaction.full(desired_state(swarm.plan(tasks, "lb:appnet"))).script)
    table = loaded.table()
    assert set(table.sets["vip_backends"].elements) == {("10.0.1.10", 0)}
    assert set(table.chains) >= {"pick_vip_1"} and "pick_vip_2" not in table.chains


def test_forget_connections_records_the_addresses(fake):
    fake.forget_connections(frozenset({"10.0.1.21", "10.0.1.20"}))
    fake.forget_connections(frozenset({"10.0.1.9"}))
    assert fake.forgotten == ["10.0.1.20", "10.0.1.21", "10.0.1.9"]
