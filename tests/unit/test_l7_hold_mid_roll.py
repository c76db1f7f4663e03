"""`l7 deploy` holds a proxy service change that replaces no task (the ACME issuer's labels) while
Swarm rolls the service: pushed mid-roll, Swarm's updater keeps the replacement that already
matches and stops the serving task of its slot before that replacement runs (swarmkit's
useExistingTask).  On the lab this refused the published HTTPS port on every node for ~2 s during
a renewal (tests/swarm/test_acme_lab.py).  A change that replaces the tasks, a stuck roll and a
finished roll are pushed as before."""
from dataclasses import replace

from ingressmesh.l7 import acme_labels
from ingressmesh.l7.acme_deploy import propagation_timeout
from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import ProxyServices, replacing
from ingressmesh.l7.settings import ProxyServiceSettings

from l7_swarm import cluster
from test_l7_deploy_health import PENDING, UpdatingDocker

RUNNING = {"DesiredState": "running", "Status": {"State": "running"}}
STARTING = {"DesiredState": "running", "Status": {"State": "starting"}}  # a start-first replacement
STOPPING = {"DesiredState": "shutdown", "Status": {"State": "running"}}
ITEM = ProxyServiceSettings()  # ingress mode, 2 replicas: start-first


def served(version: int) -> dict:
    return {ITEM.name: {acme_labels.CERTS: f"app.example:{version}"}}


def deploy(services, issuer, item=ITEM):
    (done,) = deploy_once(services, (item,), cluster([], []), ("http://c:9401",), issuer=issuer)
    return done.outcome


def labels(api) -> dict:
    return api.service_list[0]["Spec"]["Labels"]


def test_a_label_change_waits_for_the_roll_a_task_change_does_not():
    api = UpdatingDocker()
    services = ProxyServices(api, "reader-token")
    assert deploy(services, served(1)) == "created"
    calls = len(api.calls)
    api.set_update("updating")  # Swarm is rolling it: one replacement runs, the other starts
    api.task_list = [RUNNING, STOPPING, STARTING, RUNNING]
    assert deploy(services, served(2)) == "deferred" and len(api.calls) == calls  # nothing sent to Swarm
    api.service_list[0].pop("UpdateStatus")  # a spec update resets the state: the starting task still says it
    assert deploy(services, served(2)) == "deferred" and len(api.calls) == calls
    # A change of the tasks (here the image) makes every task out of date: Swarm starts a
    # replacement before it stops one, so it goes at once, with the held label.
    assert deploy(services, served(2), replace(ITEM, image="imlab/proxy:next")) == "updated"
    assert labels(api)[acme_labels.CERTS] == "app.example:2" and len(api.calls) == calls + 1
    # Going back to a template this l7 deploy pushed earlier, mid-roll: held too (a task of it may
    # still be starting).
    assert deploy(services, served(2)) == "deferred" and len(api.calls) == calls + 1
    api.task_list = [RUNNING, RUNNING]
    api.set_update("completed")
    assert deploy(services, served(3)) == "updated" and labels(api)[acme_labels.CERTS] == "app.example:3"


def test_a_stuck_roll_is_not_waited_for():
    api = UpdatingDocker()
    services = ProxyServices(api, "reader-token")
    assert deploy(services, served(1)) == "created"
    api.set_update("updating")  # a minute ago, with a new task Swarm cannot place
    api.task_list = [RUNNING, PENDING]
    assert deploy(services, served(2)) == "updated" and labels(api)[acme_labels.CERTS] == "app.example:2"


def test_replacing_reads_the_update_state_first_then_the_tasks():
    asked = []

    def tasks():
        asked.append(1)
        return [RUNNING, STOPPING]
    assert replacing({"UpdateStatus": {"State": "updating"}}, tasks) and not asked
    assert replacing({"UpdateStatus": {"State": "rollback_started"}}, tasks) and not asked
    assert not replacing({"UpdateStatus": {"State": "completed"}}, tasks) and asked
    assert replacing({}, lambda: [RUNNING, {"DesiredState": "ready", "Status": {"State": "pending"}}])
    assert not replacing({"UpdateStatus": {"State": "paused"}}, lambda: [RUNNING, STOPPING])


def test_the_issuer_waits_for_its_answer_through_a_held_roll():
    assert propagation_timeout(2) == 90.0 and propagation_timeout(0) == 60.0  # 30 s + 30 s per replica


def test_a_proxy_service_removed_under_l7_deploy_is_made_again_only_later():
    """`docker stack rm` removes the proxy services before l7 deploy's own service: a pass in
    between must not make them again (they would be left behind, with the secrets they mount)."""
    api, now = UpdatingDocker(), [100.0]
    services = ProxyServices(api, "reader-token", clock=lambda: now[0])
    assert deploy(services, served(1)) == "created"
    api.service_list.clear()  # removed (docker stack rm, or by hand)
    calls = len(api.calls)
    assert deploy(services, served(1)) == "deferred"
    now[0] += 14
    assert deploy(services, served(1)) == "deferred" and len(api.calls) == calls  # nothing created yet
    now[0] += 2  # l7 deploy still runs, its own service still there: a removal by hand, made again
    assert deploy(services, served(1)) == "created" and len(api.calls) == calls + 1


def test_the_token_secret_removed_under_l7_deploy_is_made_again_only_later():
    """`docker stack rm` removes the stack's secrets (the proxies' token copy among them) while l7
    deploy may still run a pass: making the copy again at once would leave it behind."""
    api, now = UpdatingDocker(), [100.0]
    services = ProxyServices(api, "reader-token", clock=lambda: now[0])
    assert deploy(services, served(1)) == "created"
    token = [s for s in api.secret_list if s["Spec"]["Name"].startswith("ingressmesh_token_")]
    assert len(token) == 1
    api.service_list.clear()
    api.secret_list.remove(token[0])  # docker stack rm: services first, then secrets
    now[0] += 1
    assert deploy(services, served(1)) == "deferred"
    assert not [s for s in api.secret_list if s["Spec"]["Name"].startswith("ingressmesh_token_")]
    now[0] += 15  # still running long after: a removal by hand, both made again
    assert deploy(services, served(1)) == "created"
    assert [s["Spec"]["Name"] for s in api.secret_list].count(token[0]["Spec"]["Name"]) == 1
