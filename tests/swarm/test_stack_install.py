"""ingressmesh installed as a swarm stack (`ingressmesh install --stack`) on the real 3-node lab.

Runs in the stack pass of `make test` (INGRESSMESH_LAB_MESH=stack, after test_mesh_routing.py has
run against the same stack): the agents are a global service, the controller runs on the manager,
no ingressmesh process of ours runs on the host.  The tests run in file order; the last one
removes the stack.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ingressmesh.testbed.stack_mesh import AGENT_SERVICE, CONTROLLER_SERVICE, NAME
from ingressmesh.testbed.l7_probe import http_request, proxy_update_done
from ingressmesh.testbed.swarm_probe import LoadGenerator, http_hostname
from conftest import STACK_L7_PORT
from swarm_helpers import (NETWORK, create_service, kernel_tables, published_everywhere, remove_service, wait_for,
                           wait_running)

if os.environ.get("INGRESSMESH_LAB_MESH") != "stack":
    pytest.skip("the stack pass of `make test` runs these (INGRESSMESH_LAB_MESH=stack)", allow_module_level=True)

PORT = 8093
PROXY = "ingressmesh-proxy"


@pytest.fixture(scope="module")
def steady(mesh):
    yield from published_everywhere(mesh.lab, "stacked", PORT)


def _ingressmesh_processes(lab) -> dict[int, str]:
    """pid -> cgroup of every `ingressmesh agent|controller` process in one of this lab's node
    namespaces (host processes of ours would run there too, as the processes mesh does)."""
    lab_netns = {os.stat(lab.node_netns(n)).st_ino for n in lab.config.node_numbers}
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            cgroup = open(f"/proc/{pid}/cgroup", encoding="utf-8").read()
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if netns in lab_netns and any(arg.endswith(b"ingressmesh") and argv[i + 1] in (b"agent", b"controller")
                                      for i, arg in enumerate(argv[:-1])):
            found[int(pid)] = cgroup
    return found


def _stack_containers(lab) -> dict[int, list[str]]:
    return {n: lab.docker(n, "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.stack.namespace={NAME}"
                          ).stdout.split() for n in lab.config.node_numbers}


def _entries(lab) -> dict[int, dict[str, list[str]]]:
    """Every node's programmed entries (an empty LB namespace of a network Docker is still removing
    from an earlier test may come and go)."""
    return {n: {ns: entries for ns, entries in kernel_tables(lab, n).items() if entries}
            for n in lab.config.node_numbers}


def _agent_logs(lab, n: int) -> dict[str, str]:
    """Logs of every agent container on node n, the stopped ones (the task history) too."""
    ids = lab.docker(n, "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={AGENT_SERVICE}").stdout.split()
    return {cid: (lambda done: done.stdout + done.stderr)(lab.docker(n, "logs", cid, check=False, timeout=20))
            for cid in ids}


def _agent_logs_saying(lab, n: int, needle: str) -> dict[str, str]:
    """Node n's agent logs once one says `needle` (asked again for up to 30 s: a busy dockerd may
    answer late or not at all)."""
    def saying():
        logs = _agent_logs(lab, n)
        assert any(needle in text for text in logs.values()), {cid: text[-600:] for cid, text in logs.items()}
        return logs
    return wait_for(f"node{n}'s agent logs to say {needle!r}", saying, timeout=30, interval=1)


def _following(mesh, n: int) -> bool:
    """Node n's agent answers 200 and has heard from the controller: /healthz is 200 before the
    first answer comes (`reachable` is None until then)."""
    code, health = mesh.agent_health(n)
    assert code == 200 and (health.get("controller") or {}).get("reachable") is True, (code, health)
    return True


def _node_namespaces(lab, n: int) -> list[str]:
    directory = lab.netns_dir(n)
    return [lab.node_netns(n)] + [os.path.join(directory, name) for name in sorted(os.listdir(directory))]


def _tables_left(lab, n: int) -> list[str]:
    """Node n's namespaces (its own and all of Docker's) that hold an ingressmesh table, and the
    FORWARD chain if it is still there."""
    left = []
    for ns in _node_namespaces(lab, n):
        listed = subprocess.run(["nsenter", f"--net={ns}", "nft", "list", "tables"], capture_output=True,
                                text=True, timeout=10)
        if "ingressmesh" in listed.stdout:
            left.append(os.path.basename(ns))
    chains = lab.run_in_node(n, ["iptables", "-w", "-S"], capture_output=True, text=True, timeout=10).stdout
    if "INGRESSMESH" in chains:
        left.append("iptables INGRESSMESH-INGRESS")
    return left


def test_the_mesh_runs_as_swarm_services_only(mesh, steady):
    lab = mesh.lab
    print(f"ingressmesh install --stack -> every agent in sync after {mesh.deployed_in:.1f} s")
    wanted = [PROXY + " replicated 2/2", f"{AGENT_SERVICE} global 3/3", f"{CONTROLLER_SERVICE} global 1/1",
              f"{NAME}_l7 replicated 1/1"]
    # The proxies are made by l7 deploy once it runs, after the agents are in sync: they may still be starting.
    wait_for("every service of the stack running", lambda: sorted(filter(None, lab.docker(
        1, "service", "ls", "--filter", f"label=com.docker.stack.namespace={NAME}", "--format",
        "{{.Name}} {{.Mode}} {{.Replicas}}").stdout.split("\n"))) == wanted, timeout=90, interval=1)
    assert set(mesh.agent_tasks()) == {"node1", "node2", "node3"}
    containers = _stack_containers(lab)
    processes = _ingressmesh_processes(lab)
    assert len(processes) == 4, processes  # three agents and one controller
    for pid, cgroup in processes.items():  # each one inside a container of the stack
        assert any(cid in cgroup for ids in containers.values() for cid in ids), (pid, cgroup)
    for n in lab.config.node_numbers:
        code, health = mesh.agent_health(n)
        assert code == 200 and health["controller"]["reachable"], health
        seen = {http_hostname(lab.client_netns(), lab.node_address(n), PORT) for _ in range(30)}
        assert seen == {t["container"] for t in steady}


def test_every_nodes_first_agent_task_started_none_was_rejected(mesh):
    """Each node's first agent task ran: none was rejected for a bind source that did not exist yet
    (the agent once bound <exec root>/netns, which dockerd makes with the node's first sandbox: on
    node2 and node3 that came after the stack was deployed, and Swarm retried after a rejection)."""
    client = mesh.lab.docker_client(1)
    try:
        tasks = client.api.tasks(filters={"service": AGENT_SERVICE})
    finally:
        client.close()
    for task in sorted(tasks, key=lambda t: t["CreatedAt"]):
        print(f"agent task {task['ID'][:12]} on {task['NodeID'][:12]}: {task['Status']['State']} "
              f"{task['Status'].get('Err', '')}")
    assert len({t["NodeID"] for t in tasks}) == len(mesh.lab.config.node_numbers)
    assert not [t["Status"] for t in tasks if t["Status"]["State"] == "rejected" or "bind source" in t["Status"].get("Err", "")]


def test_rolling_update_of_the_agent_service_loses_no_request(mesh, steady):
    lab = mesh.lab
    for n in lab.config.node_numbers:  # a "new version" of the image on every node (no registry here)
        lab.docker(n, "tag", "imlab/proxy:latest", "imlab/ingressmesh-next:1")
    before_tasks = mesh.agent_tasks()
    before_tables = _entries(lab)
    targets = [(lab.node_address(n), PORT) for n in lab.config.node_numbers]
    since = str(int(time.time()) - 1)
    with LoadGenerator(lab.client_netns(), targets, pause=0.01) as load:
        time.sleep(1)
        started = time.monotonic()
        lab.docker(1, "service", "update", "--detach=false", "--quiet", "--no-resolve-image",
                   "--image", "imlab/ingressmesh-next:1", AGENT_SERVICE, timeout=240)
        took = time.monotonic() - started
        mesh.wait_synced(timeout=30)
        time.sleep(1)
    result = load.result
    print(f"rolling update of {AGENT_SERVICE} (start-first, 3 nodes) took {took:.1f} s: "
          f"{result.ok} requests, {len(result.failures)} failed")
    assert result.ok > 100 and result.failures == []
    after_tasks = mesh.agent_tasks()
    assert set(after_tasks) == set(before_tasks) and not set(after_tasks.values()) & set(before_tasks.values())
    image = lab.docker(1, "service", "inspect", "-f", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                       AGENT_SERVICE).stdout.strip()
    assert image == "imlab/ingressmesh-next:1"
    assert _entries(lab) == before_tables
    for n in lab.config.node_numbers:
        # The old agent stopped on SIGTERM by itself (0, not 137: not killed at the end of its grace)
        # and left the rules (the tables above are unchanged); the new one says it took them over.
        # (`service update` returns once the new tasks run: the last old one may still be stopping.)
        exits = wait_for(f"node{n}'s old agent to exit", lambda: lab.docker(
            n, "events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", "event=die",
            "--filter", f"label=com.docker.swarm.service.name={AGENT_SERVICE}", "--format",
            "{{.Actor.Attributes.exitCode}}").stdout.split(), timeout=30, interval=1)
        assert exits == ["0"], (n, exits)
        _agent_logs_saying(lab, n, "taking over its rules")


RESIDENT = f"{AGENT_SERVICE}_drained"  # INGRESSMESH_DRAINED_RESIDENT in the stack file
LATER_PORT = 8097


def _resident(lab, n: int) -> list[str]:
    """Running resident agents (plain containers, not swarm tasks) on node n."""
    return lab.docker(n, "ps", "-q", "--no-trunc", "--filter", f"label=io.ingressmesh.resident={RESIDENT}",
                      check=False).stdout.split()


def _agent_task_containers(lab, n: int) -> list[str]:
    return lab.docker(n, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={AGENT_SERVICE}",
                      check=False).stdout.split()


def _routes(lab, n: int, port: int, tasks: list[dict]) -> bool:
    try:
        return {http_hostname(lab.client_netns(), lab.node_address(n), port) for _ in range(30)} == \
            {t["container"] for t in tasks}
    except OSError:
        return False


def test_a_drained_node_keeps_its_mesh_and_follows_changes(mesh, steady):
    """`docker node update --availability drain node3` stops every swarm task there, the agent's
    too: the agent hands its rules to a plain container that stays (agent/drained.py), which keeps
    node3's published ports answering and follows the swarm; set active again, a new agent task
    retires it and takes the rules back.  Load through node3's published port throughout."""
    lab = mesh.lab
    target = [(lab.node_address(3), PORT)]
    try:
        with LoadGenerator(lab.client_netns(), target, pause=0.01) as load:
            time.sleep(1)
            started = time.monotonic()
            lab.docker(1, "node", "update", "--availability", "drain", "node3")
            wait_for("node3's agent task gone and the resident agent running", lambda: not _agent_task_containers(
                lab, 3) and _resident(lab, 3), timeout=60, interval=0.5)
            handed = time.monotonic() - started
            wait_for("the resident agent healthy and following the controller", lambda: _following(mesh, 3),
                     timeout=30, interval=0.5)
            time.sleep(2)
        drained_load = load.result
        print(f"drain node3: its agent task stopped and the resident took over {handed:.1f} s after the drain; "
              f"{drained_load.ok} requests through node3, {len(drained_load.failures)} failed")
        assert drained_load.ok > 100 and drained_load.failures == []
        code, health = mesh.agent_health(3)
        assert code == 200 and health["controller"]["reachable"] and health["node_id"] == \
            lab.docker(3, "info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
        resident = _resident(lab, 3)
        processes = _ingressmesh_processes(lab)
        assert any(resident[0] in cgroup for cgroup in processes.values()), processes  # node3's agent is the resident
        shown = json.loads(lab.docker(3, "inspect", "-f", "{{json .}}", resident[0]).stdout)
        assert shown["HostConfig"]["RestartPolicy"]["Name"] == "always"
        assert not any(label.startswith("com.docker.swarm.") for label in shown["Config"]["Labels"])  # not a task
        # A service created while node3 is drained (its tasks on node1 and node2) is routed by node3.
        create_service(lab, "afterdrain", "--replicas", "2", "--network", NETWORK, "--publish", f"{LATER_PORT}:80")
        created = time.monotonic()
        later = wait_running(lab, "afterdrain", 2)
        assert {t["node"] for t in later} <= {"node1", "node2"}
        wait_for("drained node3 routes afterdrain", lambda: _routes(lab, 3, LATER_PORT, later), timeout=60, interval=0.5)
        print(f"a service created while node3 is drained: routed through node3 {time.monotonic() - created:.1f} s "
              "after `service create`")
        with LoadGenerator(lab.client_netns(), target + [(lab.node_address(3), LATER_PORT)], pause=0.01) as load:
            time.sleep(1)
            started = time.monotonic()
            lab.docker(1, "node", "update", "--availability", "active", "node3")
            wait_for("a new agent task on node3 and the resident retired", lambda: _agent_task_containers(lab, 3)
                     and not lab.docker(3, "ps", "-aq", "--filter", f"label=io.ingressmesh.resident={RESIDENT}"
                                        ).stdout.strip(),
                     timeout=90, interval=0.5)
            wait_for("node3's new agent healthy", lambda: mesh.agent_health(3)[0] == 200, timeout=30, interval=0.5)
            back = time.monotonic() - started
            time.sleep(2)
        active_load = load.result
        print(f"node3 active again: the new agent task took over {back:.1f} s later; {active_load.ok} requests, "
              f"{len(active_load.failures)} failed")
        assert active_load.ok > 100 and active_load.failures == []
        _agent_logs_saying(lab, 3, "retired the resident agent")
        assert _routes(lab, 3, LATER_PORT, later)
    finally:
        lab.docker(1, "node", "update", "--availability", "active", "node3", check=False)
        remove_service(lab, "afterdrain")
    wait_running(lab, "stacked", 3, timeout=90)  # node3's replica, pending while it was drained, is back


def test_a_node_that_joins_later_gets_its_agent_and_its_rules(mesh, steady):
    """node3 leaves the swarm, then joins again as a new node: the global service starts an agent
    there and it routes, with nobody touching it.  (`docker swarm leave` kills the node's swarm
    containers at once: the agent gets no SIGTERM and its host-namespace table stays until the node
    joins again, as here, or `ingressmesh cleanup` runs: README "Known limits".)"""
    lab = mesh.lab
    old_id = lab.docker(3, "info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
    lab.docker(3, "swarm", "leave", timeout=60)
    wait_for("node3's stack containers to stop", lambda: not _stack_containers(lab)[3], timeout=60)
    wait_for("node3 Down on the manager", lambda: lab.docker(
        1, "node", "inspect", "-f", "{{.Status.State}}", old_id).stdout.strip() == "down", timeout=60)
    lab.docker(1, "node", "rm", "--force", old_id)
    token = lab.docker(1, "swarm", "join-token", "-q", "worker").stdout.strip()
    joined = time.monotonic()
    lab.docker(3, "swarm", "join", "--advertise-addr", lab.node_address(3), "--listen-addr",
               f"{lab.node_address(3)}:2377", "--token", token, f"{lab.node_address(1)}:2377", timeout=60)
    new_id = lab.docker(3, "info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
    assert new_id and new_id != old_id
    tasks = wait_running(lab, "stacked", 3, timeout=90)
    wait_for("node3 routes stacked", lambda: {http_hostname(lab.client_netns(), lab.node_address(3), PORT)
                                              for _ in range(30)} == {t["container"] for t in tasks}, timeout=90,
             interval=0.5)
    routed = time.monotonic() - joined
    print(f"node3 joined again as {new_id}: its agent routed the published port {routed:.1f} s after the join")
    assert "node3" in mesh.agent_tasks()
    code, health = mesh.agent_health(3)
    assert code == 200 and health["node_id"] == new_id


def _routes_by_host(stack, host: str) -> None:
    """A labelled service with two tasks, served through the stack's proxies on every node by its
    Host (and another Host is 404), then removed."""
    lab = stack.lab
    create_service(lab, "hosted", "--network", NETWORK, "--replicas", "2", "--label", f"com.docker.lb.hosts={host}",
                   "--label", "com.docker.lb.port=80")
    try:
        tasks = wait_running(lab, "hosted", 2)
        try:
            wait_for(f"the proxies' rolling update to join the network, then {host} served", lambda:
                     proxy_update_done(lab, PROXY) and all(
                         http_request(lab.client_netns(), lab.node_address(n), STACK_L7_PORT, host).status
                         == 200 for n in lab.config.node_numbers), timeout=120, interval=1)
        except AssertionError:
            print(lab.docker(1, "service", "ps", "--no-trunc", PROXY).stdout, stack.logs("l7", lines=40),
                  lab.docker(1, "service", "inspect", "-f", "{{json .Spec.TaskTemplate.Networks}}", PROXY).stdout)
            raise
        for n in lab.config.node_numbers:
            answer = http_request(lab.client_netns(), lab.node_address(n), STACK_L7_PORT, host)
            assert answer.status == 200 and answer.body.strip() in {t["container"] for t in tasks}, answer
        assert http_request(lab.client_netns(), lab.node_address(1), STACK_L7_PORT, "other.local").status == 404
    finally:
        remove_service(lab, "hosted")


def test_the_l7_layer_runs_in_the_stack_and_routes_by_host(mesh, steady):
    """ingressmesh-l7.yml: `l7 deploy --watch` as a stack service on the manager made the proxy
    service, labelled as part of the stack, its proxies following the controllers it found."""
    labels = json.loads(mesh.lab.docker(1, "service", "inspect", "-f", "{{json .Spec.Labels}}", PROXY).stdout)
    assert labels["com.docker.stack.namespace"] == NAME
    _routes_by_host(mesh, "stacked.local")
    _l7_deploy_is_behind_the_docker_filter(mesh.lab)
    refused = [line for line in _logs_with(mesh, "l7", ["docker-filter (l7-deploy):"], lines=400).splitlines()
               if "docker-filter (l7-deploy):" in line]
    assert refused and all("GET /containers/json refused" in line for line in refused), refused  # the probe's only


def _logs_with(stack, service: str, needles: list[str], lines: int) -> str:
    """`docker service logs` of the stack's `service` once they hold every one of `needles`: now
    and then it answers nothing at all (swarm-stack at 719077b, beside tests/swarm), or some
    nodes' lines only, so it is asked again."""
    def holding():
        text = stack.logs(service, lines=lines)
        return text if all(needle in text for needle in needles) else None
    return wait_for(f"{service}'s logs to show {needles!r}", holding, timeout=30, interval=1)


def _l7_deploy_is_behind_the_docker_filter(lab) -> None:
    """`l7 deploy` runs as nobody; as nobody the manager's socket is out of reach and the filtered
    one refuses what l7 deploy never does (naming it) while passing what it does."""
    (container,) = lab.docker(1, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}_l7").stdout.split()
    listed = lab.docker(1, "top", container, "-eo", "pid,uid,args").stdout.splitlines()[1:]  # docker top needs pid
    filters = [line.split()[1] for line in listed if "docker-filter" in line]
    deployers = [line.split()[1] for line in listed if "l7 deploy" in line and "docker-filter" not in line]
    assert filters == ["0"] and deployers == ["65534"], listed
    probe = ("import docker, sys\n"
             "def call(url, what):\n"
             "    try:\n"
             "        getattr(docker.APIClient(base_url=url, version='1.41', timeout=10), what)(); return 'ok'\n"
             "    except docker.errors.APIError as err: return f'{err.status_code} {err.explanation}'\n"
             "    except Exception as err: return type(err).__name__ + ': ' + str(err)[:80]\n"
             "for url, what in (('unix:///run/ingressmesh-docker/docker.sock', 'containers'),\n"
             "                  ('unix:///run/ingressmesh-docker/docker.sock', 'info'),\n"
             "                  ('unix:///var/run/docker.sock', 'info')):\n"
             "    print(what, '->', call(url, what))\n")
    shown = lab.docker(1, "exec", "-u", "65534:65534", container, "python3", "-c", probe).stdout.splitlines()
    print("as nobody in the l7 task:", shown)
    assert shown[0].startswith("containers -> 403 docker-filter (l7-deploy): GET /containers/json refused"), shown
    assert shown[1] == "info -> ok" and "Permission denied" in shown[2], shown


def test_stack_rm_removes_every_rule_on_every_node(mesh, steady):
    lab = mesh.lab
    assert all(_tables_left(lab, n) for n in lab.config.node_numbers)  # there is something to remove
    took = mesh.remove()
    left = {n: _tables_left(lab, n) for n in lab.config.node_numbers}
    print(f"docker stack rm: every agent gone after {took:.1f} s; ingressmesh tables left: {left}")
    assert left == {1: [], 2: [], 3: []}
    assert all(not ids for ids in _stack_containers(lab).values())
    assert all(not mesh.proxy_containers(n) for n in lab.config.node_numbers)
    assert lab.docker(1, "service", "ls", "-q", "--filter", f"name={PROXY}").stdout.strip() == ""
    assert "ingressmesh_token_" not in lab.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout  # the proxies' copy
    assert _ingressmesh_processes(lab) == {}
    assert len(wait_running(lab, "stacked", 3, timeout=10)) == 3  # the workload itself is left alone


def test_the_stack_with_tls_between_agents_and_controllers(mesh, steady):
    """`install --stack --tls --l7-config` (the stack above is gone): the controller serves https
    with a certificate naming the manager, the agents check it with the CA (their only TLS secret)
    and use their node's credential derived from the cluster secret; `l7 deploy` and the proxies it
    makes follow it over https with the same CA and route by Host; `docker stack rm` removes the
    TLS secrets too."""
    from ingressmesh.testbed.stack_mesh import StackMesh
    lab = mesh.lab
    secured = StackMesh(lab, tls=True, l7_config=mesh.l7_config)
    secured.up()
    try:
        print(f"install --stack --tls -> every agent in sync after {secured.deployed_in:.1f} s")
        tasks = wait_running(lab, "stacked", 3)  # not `steady`'s: node3's task was replaced by the drain and the join
        for n in lab.config.node_numbers:
            code, health = secured.agent_health(n)
            assert code == 200 and health["controller"]["reachable"], health
            assert health["controller_url"] == f"https://{lab.node_address(1)}:9401"
            wait_for(f"node{n} routes stacked", lambda: _routes(lab, n, PORT, tasks), timeout=30, interval=0.5)
        with pytest.raises(OSError):
            secured.get(secured.controller_url + "/healthz")  # plain http is not served any more
        nodes = [line.split()[0] for line in lab.docker(1, "node", "ls", "--format", "{{.ID}} {{.Status}}").stdout.splitlines()
                 if line.endswith(" Ready")]
        said = [f"holds the cluster secret: using node {node}'s credential derived from it" for node in nodes]
        logs = _logs_with(secured, "agent", said, lines=200)  # every node's agent, not just one
        assert len(nodes) == 3 and not any(f"{line} (" in logs for line in said), logs  # and each covered it
        shown = wait_for("l7 deploy to make the proxy service", lambda: lab.docker(
            1, "service", "inspect", "-f", "{{json .Spec.TaskTemplate.ContainerSpec.Command}}", PROXY, check=False,
            timeout=20).stdout.strip(), timeout=60, interval=1)
        argv = json.loads(shown)
        assert argv[argv.index("--controller") + 1] == f"https://{lab.node_address(1)}:9401" and "--ca" in argv
        started = time.monotonic()
        _routes_by_host(secured, "secured.local")  # the proxies' snapshot came over https: http is not served
        print(f"install --stack --tls --l7-config: secured.local routed by the proxies {time.monotonic() - started:.1f} s "
              "after its service was created")
    finally:
        took = secured.remove()
    secrets = lab.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout
    print(f"docker stack rm of the TLS stack: {took:.1f} s; secrets left: {secrets.split()}")
    assert "ingressmesh_tls_" not in secrets and "ingressmesh_ca_" not in secrets


def test_the_stack_issues_certificates_and_stack_rm_removes_them(mesh, steady, tmp_path_factory):
    """`install --stack --l7-config` with an [ACME] table (issue 23): `l7 deploy`, as nobody behind the
    docker filter, takes the issuer lease, trusts pebble through the CABundle that install turned
    into a Docker config, and has a labelled service's certificate served through every node;
    the issuer's task rescheduled orders nothing twice and issues the next host; `docker stack rm`
    removes the certificates, the lease and the CA config with the stack."""
    from acme_helpers import certificate_versions, lease_holder, pebble_on_lab, served_through_every_node
    from ingressmesh.l7.acme_labels import ACME
    from ingressmesh.l7.acme_names import PREFIX
    from ingressmesh.l7.acme_swarm import LEASE_SECRET
    from ingressmesh.testbed import l7_lab
    from ingressmesh.testbed.stack_mesh import StackMesh
    from l7_helpers import labelled
    lab, host, https_port = mesh.lab, "stacked.acme.lab", 8445

    def ours() -> list[str]:
        names = lab.docker(1, "secret", "ls", "--format", "{{.Name}}").stdout.split()
        configs = lab.docker(1, "config", "ls", "--format", "{{.Name}}").stdout.split()
        return sorted(n for n in names + configs
                      if n.startswith(PREFIX) or n == LEASE_SECRET or n.startswith("ingressmesh_acme_ca_"))

    with pebble_on_lab(lab, str(tmp_path_factory.mktemp("stack-acme")), STACK_L7_PORT) as pebble:
        config = (l7_lab.extension("default", "", STACK_L7_PORT, ssl_port=https_port)
                  + f'\n[ACME]\nDirectoryURL = "{pebble.directory}"\nCABundle = "{pebble.ca_file}"\n')
        stacked = StackMesh(lab, l7_config=config)
        stacked.up()
        try:
            started = time.monotonic()
            labelled(lab, "acmestacked", "--label", f"{ACME}=true", hosts=host, port="80")
            serials = wait_for(f"pebble's certificate for {host} through every node", lambda: served_through_every_node(
                lab, https_port, pebble.trust(), host), timeout=240, interval=2)
            print(f"stack with [ACME]: {host}'s certificate served through every node "
                  f"{time.monotonic() - started:.1f} s after its service was created")
            assert len(serials) == 1 and certificate_versions(lab, host) == [1]
            made = ours()
            assert LEASE_SECRET in made and any(n.startswith("ingressmesh_acme_ca_") for n in made), made
            assert len([n for n in made if n.startswith(PREFIX)]) == 2, made  # the certificate and its key
            # The issuer's task rescheduled (`docker service update --force`): the old one releases the
            # lease on SIGTERM, the new one takes it, orders nothing again and issues the next host.
            holder = lease_holder(lab)
            lab.docker(1, "service", "update", "--detach", "--force", f"{NAME}_l7")
            wait_for("the new l7 task to hold the lease", lambda: lease_holder(lab) not in ("", holder), timeout=120,
                     interval=1)
            labelled(lab, "acmestacked2", "--label", f"{ACME}=true", hosts=f"next.{host}", port="80")
            wait_for(f"next.{host}'s certificate through every node", lambda: served_through_every_node(
                lab, https_port, pebble.trust(), f"next.{host}"), timeout=240, interval=2)
            assert served_through_every_node(lab, https_port, pebble.trust(), host) == serials
            # one certificate per host: the rescheduled issuer ordered nothing twice
            assert certificate_versions(lab, host) == [1] and certificate_versions(lab, f"next.{host}") == [1]
            print(f"pebble orders: {pebble.orders()} (a challenge retried after meeting a lagging proxy counts)")
        except AssertionError:
            print(stacked.logs("l7", lines=80))
            print("pebble's log:\n" + pebble.log_text()[-3000:])
            raise
        finally:
            remove_service(lab, "acmestacked")
            remove_service(lab, "acmestacked2")
            took = stacked.remove()
        wait_for("the stack's ACME secrets, lease and CA config gone", lambda: not ours(), timeout=60, interval=1)
        print(f"docker stack rm of the ACME stack: {took:.1f} s, then every ACME secret, the lease and the CA config gone")
