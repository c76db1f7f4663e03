"""FakeNft against the real nft 1.0.6: the same plans give the same listing, the same bad
scripts are refused, so the rootless tests built on the Fake can be trusted.

Runs in a scratch network namespace (`imfk-<random>`) that the test creates and deletes.
"""
from __future__ import annotations

import json

import pytest

from ingressmesh import model
from ingressmesh.nft.backend import NftBackend, NftError
from ingressmesh.nft.kernel import KernelNft
from ingressmesh.nft.fake import FakeNft
from ingressmesh.nft.reader import state_from_json
from ingressmesh.plan import PlanOptions, plan_node

pytestmark = pytest.mark.kernel
NOW = 1000.0
T = "ip ingressmesh"


def _task(task_id: str, host: int, **fields) -> model.Task:
    return model.Task(task_id, "web", "n1" if host % 2 else "n2", addresses=(
        model.NetworkAddress("app", f"10.0.1.{host}"), model.NetworkAddress("ing", f"10.255.0.{host}")), **fields)


def _cluster(*tasks: model.Task) -> model.Cluster:
    lb = lambda a, b: (model.NodeAddress("n1", a), model.NodeAddress("n2", b))  # noqa: E731
    return model.Cluster(
        nodes=(model.Node("n1", "node1", "10.9.0.1"), model.Node("n2", "node2", "10.9.0.2")),
        networks=(model.Network("ing", "ingress", "10.255.0.0/16", True, lb("10.255.0.2", "10.255.0.3")),
                  model.Network("app", "app", "10.0.1.0/24", False, lb("10.0.1.2", "10.0.1.3"))),
        services=(model.Service("web", "web", vips=(model.VirtualIP("app", "10.0.1.10"),),
                                ports=(model.PublishedPort("tcp", 8080, 80), model.PublishedPort("udp", 5353, 53))),
                  model.Service("api", "api", vips=(model.VirtualIP("app", "10.0.1.11"),),
                                ports=(model.PublishedPort("tcp", 9090, 90),))),
        tasks=tasks)


# A history the backends go through: first sync, a replaced task, scale-up plus a drain,
# then no eligible task at all.  Odd hosts run on n1, the node planned for.
HISTORY = [
    _cluster(_task("t20", 20), _task("t21", 21)),
    _cluster(_task("t20", 20), _task("t25", 25)),
    _cluster(_task("t20", 20), _task("t25", 25), _task("t26", 26), _task("t27", 27),
             _task("t28", 28, desired_state="shutdown", since=NOW - 1)),
    _cluster(_task("t21", 21, current_state="failed")),
]


def _normal(document: dict) -> list:
    """The listing without handles and with elements in a fixed order (the kernel hashes them)."""
    out = []
    for entry in json.loads(json.dumps(document["nftables"])):
        for body in entry.values():
            body.pop("handle", None)
            if "elem" in body:
                body["elem"] = sorted(body["elem"], key=json.dumps)
        out.append(entry)
    return out


def _assert_same(kernel: NftBackend, fake: NftBackend) -> None:
    k, f = kernel.runner.list_table(), fake.runner.list_table()
    assert (k is None) == (f is None)
    if k is not None:
        assert state_from_json(f) == state_from_json(k)
        assert _normal(f) == _normal(k)
        assert fake.read() == kernel.read()


@pytest.mark.parametrize("key", ["host", "ingress", "lb:app"])
def test_the_same_plans_give_the_same_listing(scratch, key):
    kernel, fake = NftBackend(KernelNft(scratch)), NftBackend(FakeNft())
    for step, cluster in enumerate(HISTORY):
        plan = plan_node(cluster, "n1", PlanOptions(now=NOW)).namespace(key)
        k_tx, f_tx = kernel.apply(plan), fake.apply(plan)
        assert (k_tx and k_tx.script) == (f_tx and f_tx.script)
        assert k_tx is None or k_tx.full == (step == 0)  # later steps are element diffs
        _assert_same(kernel, fake)
    kernel.cleanup()
    fake.cleanup()
    _assert_same(kernel, fake)


REFUSED = [
    f"add element {T} nosuch {{ 10.0.0.1 }}",
    f"add element {T} vip_rejects {{ 10.0.1.300 }}",
    f"add element {T} port_rejects {{ tcp . 65536 }}",
    f"add element {T} vip_rejects {{ 10.0.0.1 . 5 }}",
    f"add element {T} vip_rejects {{ 10.0.0.1 : 5 }}",
    f"add element {T} vip_backends {{ 10.0.0.1 . 0 }}",
    f"add element {T} vip_backends {{ 10.0.0.1 . 4294967296 : 10.0.0.2 }}",
    f"add element {T} vip_backends {{ 10.0.1.10 . 0 : 10.0.1.99 }}",
    f"add element {T} vip_backends {{ 10.9.0.9 . 1 : 1.2.3.4, 10.9.0.9 . 1 : 1.2.3.5 }}",
    f"add element {T} vip_services {{ 10.0.0.1 : goto nochain }}",
    f"add element {T} vip_services {{ 10.0.0.1 : goto prerouting }}",
    f'add element {T} vip_rejects {{ 10.0.0.1 comment "{"x" * 129}" }}',
    f"delete element {T} vip_rejects {{ 10.9.9.9 }}",
    f"add rule {T} nochain reject",
    f"add rule {T} pick_vip_1 dnat ip to ip daddr . numgen random mod 0 map @vip_backends",
    f"table {T} {{\n  set published {{ type ipv4_addr; }}\n}}",
    f'add element {T} vip_rejects {{ 10.0.0.7 comment "ok" }}\nadd element {T} vip_rejects {{ 10.0.0.300 }}',
]


ACCEPTED = [
    f'add element {T} vip_rejects {{ 10.0.0.1 comment "{"x" * 128}", 10.0.0.2 }}',
    f"add element {T} vip_backends {{ 10.9.0.9 . 4294967295 : 1.2.3.4, 10.9.0.9 . 4294967295 : 1.2.3.4 }}",
    f'add element {T} vip_backends {{ 10.0.1.10 . 0 comment "other" : 10.0.1.21 }}',  # first comment stays
    f"delete element {T} vip_backends {{ 10.0.1.10 . 0 }}\nadd element {T} vip_backends {{ 10.0.1.10 . 0 : 10.0.1.9 }}",
    f"add element {T} port_targets {{ tcp . 80 : 8080 }}\nadd element {T} port_backends {{ udp . 53 . 7 : 10.0.1.7 }}",
    f"add chain {T} pick_vip_1",
]


def _loaded(scratch) -> tuple[NftBackend, NftBackend]:
    kernel, fake = NftBackend(KernelNft(scratch)), NftBackend(FakeNft())
    plan = plan_node(_cluster(_task("t21", 21)), "n1", PlanOptions(now=NOW)).namespace("lb:app")
    kernel.apply(plan)
    fake.apply(plan)
    return kernel, fake


@pytest.mark.parametrize("script", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_the_same_scripts_are_refused(scratch, script):
    kernel, fake = _loaded(scratch)
    for backend in (kernel, fake):
        with pytest.raises(NftError):
            backend.runner.run_script(script + "\n")
    _assert_same(kernel, fake)


@pytest.mark.parametrize("script", ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_the_same_scripts_are_accepted(scratch, script):
    kernel, fake = _loaded(scratch)
    for backend in (kernel, fake):
        backend.runner.run_script(script + "\n")
    _assert_same(kernel, fake)
