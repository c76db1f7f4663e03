"""The fast path's pure parts added for issue 22 and 19.9: which tables count as a container's
own rules, and the renders shared by every container namespace (one render per change)."""
from ingressmesh.nft.backend import NftBackend
from ingressmesh.nft.fake import FakeNft
from ingressmesh.nft.own_rules import own_tables
from ingressmesh.nft.shared_renders import SharedRenders
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.plan_containers import LocalContainer, plan_containers
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed


def _rule(family, table, chain="c"):
    return {"rule": {"family": family, "table": table, "chain": chain, "expr": []}}


def test_own_tables_are_every_ip_or_inet_table_with_rules_but_ours_and_dockers_nat():
    ruleset = {"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "empty"}},
                            _rule("ip", "ingressmesh"), _rule("ip", "nat", "DOCKER_OUTPUT"),
                            _rule("ip", "filter", "OUTPUT"), _rule("ip", "filter", "INPUT"),
                            _rule("inet", "fw"), _rule("ip6", "filter"), _rule("bridge", "x")]}
    assert own_tables(ruleset) == ["ip filter", "inet fw"]
    assert own_tables({"nftables": []}) == []


def test_shared_renders_render_each_entry_once_and_tables_equal_unshared_ones():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    plan = plan_containers(plan_node(cluster, "node1", PlanOptions(now=1.0)),
                           [LocalContainer(c, c, (APP_ID,)) for c in ("a", "b")])
    renders = SharedRenders()
    shared = [NftBackend(FakeNft(), renders) for _ in range(2)]
    alone = NftBackend(FakeNft())
    assert plan.namespace("ctr:a").vips is plan.namespace("ctr:b").vips
    lb = plan.namespace(f"lb:{APP_ID}")  # FakeNft knows the LB role's rules; the sharing is the same
    txs = [backend.apply(lb) for backend in shared]
    assert txs[0] is txs[1], "the second namespace reused the first one's full table"
    assert alone.apply(lb).script == txs[0].script
    entry = lb.vips[0]
    assert renders.render("container", entry) is renders.render("container", entry)
    renders.clear()
    assert renders.render("container", entry).entry is entry


def test_rules_are_told_from_a_tables_text_listing():
    from ingressmesh.nft.libnft import rules_in_listing
    empty = "table ip filter {\n\tchain OUTPUT {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n"
    assert not rules_in_listing(empty)
    assert rules_in_listing(empty.replace("accept;\n", "accept;\n\t\tip daddr 10.0.1.2 drop\n"))
    assert not rules_in_listing("table ip x {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n")
