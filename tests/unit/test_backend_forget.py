"""Which connections the nft backend asks conntrack to forget, and when (rootless, FakeNft)."""
import copy

from ingressmesh.netns import NetnsError
from ingressmesh.nft.backend import NftBackend
from ingressmesh.nft.fake import FakeNft

from small_swarm import _BASE


def _web_tasks(swarm, hosts=(20, 21, 22)):
    return [swarm.task(f"t{h}", "web", "n1", h) for h in hosts]


def test_dropping_one_published_port_forgets_nobody_still_served(swarm, fake, backend, monkeypatch):
    backend.apply(swarm.plan(_web_tasks(swarm), "ingress"))
    fewer = copy.deepcopy(_BASE)
    fewer["services"][0]["ports"] = fewer["services"][0]["ports"][:1]  # udp/5353 goes away
    monkeypatch.setattr("small_swarm._BASE", fewer)
    tx = backend.apply(swarm.plan(_web_tasks(swarm), "ingress"))
    assert tx.removed > 0 and not tx.full
    assert fake.forgotten == []  # 10.255.0.20-22 still serve tcp/8080


def test_a_removed_task_is_forgotten_once_no_front_end_uses_it(swarm, fake, backend):
    backend.apply(swarm.plan(_web_tasks(swarm), "lb:appnet"))
    backend.apply(swarm.plan(_web_tasks(swarm, (20, 21)), "lb:appnet"))
    assert fake.forgotten == ["10.0.1.22"]


def test_a_failed_forget_is_retried_on_the_next_apply(swarm):
    class FlakyForget(FakeNft):
        def __init__(self):
            super().__init__()
            self.fail = True

        def forget_connections(self, addresses):
            if self.fail:
                self.fail = False
                raise NetnsError("conntrack missing")
            super().forget_connections(addresses)

    runner = FlakyForget()
    backend = NftBackend(runner)
    backend.apply(swarm.plan(_web_tasks(swarm), "lb:appnet"))
    backend.apply(swarm.plan(_web_tasks(swarm, (20, 21)), "lb:appnet"))  # forget fails, apply stands
    assert runner.forgotten == [] and backend.applied is not None
    assert backend.apply(swarm.plan(_web_tasks(swarm, (20, 21)), "lb:appnet")) is None
    assert runner.forgotten == ["10.0.1.22"]


def test_a_new_backend_reads_the_old_table_once_to_forget_tasks_gone_since(swarm, fake):
    NftBackend(fake).apply(swarm.plan(_web_tasks(swarm), "lb:appnet"))  # an earlier process
    restarted = NftBackend(fake)
    tx = restarted.apply(swarm.plan(_web_tasks(swarm, (20,)), "lb:appnet"))
    assert tx.full
    assert fake.forgotten == ["10.0.1.21", "10.0.1.22"]


def test_the_use_counts_keep_no_zero_entries(swarm, fake, backend):
    backend.apply(swarm.plan(_web_tasks(swarm), "lb:appnet"))
    for hosts in ((20, 21), (20,), (21, 22), (20, 21, 22)):
        backend.apply(swarm.plan(_web_tasks(swarm, hosts), "lb:appnet"))
        assert all(count > 0 for count in backend._refs.values()), backend._refs
        assert set(backend._refs) == {f"10.0.1.{h}" for h in hosts}
