"""Which UDP destinations get their stale conntrack entries deleted: front-ends coming alive."""
from ingressmesh.plan import ACTIVE, DRAINING, Backend, NamespacePlan, PortEntry, VipEntry
from ingressmesh.dataplane.udp_revive import Destination, reviving

T1, T2 = Backend("t1", "10.0.1.5", 0, ACTIVE), Backend("t2", "10.0.1.6", 0, DRAINING)


def lb(*vips):
    return NamespacePlan(role="lb", network_id="n", vips=tuple(vips))


def test_a_vip_that_gets_its_first_active_backend_is_flushed_once():
    none, draining_only, alive = (VipEntry("a", "10.0.1.2", ()), VipEntry("a", "10.0.1.2", (T2,)),
                                  VipEntry("a", "10.0.1.2", (T1, T2)))
    assert reviving(lb(none), lb(alive)) == [Destination(address="10.0.1.2")]
    assert reviving(lb(draining_only), lb(alive)) == [Destination(address="10.0.1.2")]
    assert reviving(lb(), lb(alive)) == [Destination(address="10.0.1.2")]
    assert reviving(lb(alive), lb(alive)) == []  # already alive: working flows are left alone
    assert reviving(None, lb(alive)) == []  # a fresh start knows no history


def test_published_udp_ports_in_the_ingress_and_host_namespaces():
    old = NamespacePlan(role="ingress", ports=(PortEntry("s", "udp", 53, ()), PortEntry("s", "tcp", 80, ())))
    new = NamespacePlan(role="ingress", ports=(PortEntry("s", "udp", 53, (T1,)), PortEntry("s", "tcp", 80, (T1,))))
    assert reviving(old, new) == [Destination(port=53)]  # tcp is never flushed
    host_old = NamespacePlan(role="host", ports=(PortEntry("s", "tcp", 80),))
    host_new = NamespacePlan(role="host", ports=(PortEntry("s", "tcp", 80), PortEntry("s", "udp", 514)))
    assert reviving(host_old, host_new) == [Destination(port=514)]
    assert Destination(port=514).conntrack_args() == ["-p", "udp", "--orig-port-dst", "514"]
    assert Destination(address="10.0.1.2").conntrack_args() == ["-p", "udp", "--orig-dst", "10.0.1.2"]
