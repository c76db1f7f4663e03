"""The Docker API filter (issue 19 point 10): real HTTP over unix sockets.  A small fake dockerd
(aiohttp, records what reaches it) behind the real DockerFilter, driven by the real Docker SDK and
the real `l7 deploy` code: its calls pass, everything else is 403 naming the call and never
reaches dockerd."""
import asyncio
import json
import os
import socket
import stat
import threading

import docker
import docker.errors
import pytest
from aiohttp import web

from ingressmesh.docker_filter.calls import Call, Refused
from ingressmesh.docker_filter.deployer_rules import DeployerRules
from ingressmesh.docker_filter.proxy import DockerFilter
from ingressmesh.docker_filter.run_as import RunAsError, check_unreachable
from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import ProxyServices, desired_spec
from ingressmesh.l7.settings import parse, with_default_ca_secret

from l7_swarm import cluster, service, task

L7_TOML = """
[Extensions.default]
ProxyImage = "imlab/proxy:latest"
PublishedPort = 8095
ProxySecrets = ["web_cert"]
"""
SETTINGS = with_default_ca_secret(parse(L7_TOML), "ingressmesh_ca_abc")


class FakeDockerd:
    """What a manager's dockerd answers to the calls in play; every request recorded."""

    def __init__(self):
        self.seen: list[str] = []
        self.services = {"appid": {"ID": "appid", "Version": {"Index": 3}, "Spec": {"Name": "app"}}}
        self.secrets = {"caid": {"Name": "ingressmesh_ca_abc", "Labels": {}}, "webid": {"Name": "web_cert", "Labels": {}},
                        "dbid": {"Name": "app_db_password", "Labels": {}},
                        "clusterid": {"Name": "ingressmesh_secret", "Labels": {}}}
        self.versions: dict[str, int] = {}  # secret id -> Swarm's version index (1 when never updated)
        self.networks = {"appnet": {"Id": "appnet", "Name": "app", "Driver": "overlay"},
                         "othernet": {"Id": "othernet", "Name": "other", "Driver": "overlay"},
                         "hostid": {"Id": "hostid", "Name": "host", "Driver": "host"}}

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.split("/", 2)[-1] if request.path.startswith("/v1.") else request.path.lstrip("/")
        self.seen.append(f"{request.method} /{path}")
        body = await request.read()
        if path == "version":
            return web.json_response({"ApiVersion": "1.45", "Version": "28.2.2"})
        if path == "info":
            return web.json_response({"Swarm": {"NodeAddr": "10.0.0.5", "RemoteManagers": [{"Addr": "10.0.0.5:2377"}]}})
        if path == "secrets" and request.method == "GET":
            names = json.loads(request.query.get("filters", "{}")).get("name", [])
            return web.json_response([{"ID": i, "Version": {"Index": self.versions.get(i, 1)}, "Spec": s}
                                      for i, s in self.secrets.items()
                                      if not names or any(n in s["Name"] for n in names)])
        if path == "secrets/create":
            spec = json.loads(body)
            if any(s["Name"] == spec["Name"] for s in self.secrets.values()):
                return web.json_response({"message": f"secret {spec['Name']} already exists"}, status=409)
            self.secrets[f"id{len(self.secrets)}"] = {"Name": spec["Name"], "Labels": spec.get("Labels") or {}}
            return web.json_response({"ID": f"id{len(self.secrets) - 1}"}, status=201)
        if path.startswith("secrets/") and path.endswith("/update"):  # Swarm: labels only, at the given version
            secret_id = path.split("/")[1]
            if int(request.query["version"]) != self.versions.get(secret_id, 1):
                return web.json_response({"message": "rpc error: code = Unknown desc = update out of sequence"},
                                         status=500)
            self.secrets[secret_id] = {"Name": self.secrets[secret_id]["Name"], "Labels": json.loads(body)["Labels"]}
            self.versions[secret_id] = self.versions.get(secret_id, 1) + 1
            return web.Response(status=200)
        if path.startswith("secrets/") and request.method == "DELETE":
            return web.Response(status=204) if self.secrets.pop(path.split("/")[1], None) else self._missing()
        if path.startswith("secrets/"):
            found = self.secrets.get(path.split("/")[1])
            return web.json_response({"ID": path.split("/")[1], "Spec": found}) if found else self._missing()
        if path.startswith("networks/"):
            found = self.networks.get(path.split("/")[1])
            return web.json_response(found) if found else self._missing()
        if path == "services" and request.method == "GET":
            names = json.loads(request.query.get("filters", "{}")).get("name", [])
            return web.json_response([s for s in self.services.values() if not names or s["Spec"]["Name"] in names])
        if path == "services/create":
            spec = json.loads(body)
            self.services[spec["Name"] + "id"] = {"ID": spec["Name"] + "id", "Version": {"Index": 1}, "Spec": spec}
            return web.json_response({"ID": spec["Name"] + "id"}, status=201)
        if path.startswith("services/") and path.endswith("/update"):
            self.services[path.split("/")[1]]["Spec"] = json.loads(body)
            return web.json_response({"Warnings": []})
        if path.startswith("services/"):
            found = self.services.get(path.split("/")[1])
            return web.json_response(found) if found else self._missing()
        return web.json_response([])  # e.g. containers/json, if it ever got here

    @staticmethod
    def _missing() -> web.Response:
        return web.json_response({"message": "not found"}, status=404)


@pytest.fixture()
def filtered(tmp_path):
    """(filtered socket path, fake dockerd) with the filter and the fake on one loop in a thread."""
    fake = FakeDockerd()
    real, listen = str(tmp_path / "docker.sock"), str(tmp_path / "filtered.sock")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    async def serve():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, real).start()
        holder["filter"] = await DockerFilter(DeployerRules(SETTINGS, "ingressmesh_l7", "ingressmesh"), real,
                                              listen).start()
        holder["runner"] = runner
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield listen, fake
    finally:
        async def stop():
            await holder["filter"].stop()
            await holder["runner"].cleanup()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _api(listen: str) -> docker.APIClient:
    return docker.APIClient(base_url=f"unix://{listen}", version="1.45", timeout=10)


def test_l7_deploy_passes_and_makes_its_proxy_service(filtered):
    listen, fake = filtered
    assert stat.S_IMODE(os.stat(listen).st_mode) == 0o600
    api = _api(listen)
    labelled = cluster([service("web", {"hosts": "web.local", "port": "80", "ssl_cert": "web_cert",
                                        "ssl_key": "web_cert"})], [task("w1", "web", 2)])
    services = ProxyServices(api, "reader:abc")
    (done,) = deploy_once(services, SETTINGS, labelled, ("https://10.0.0.5:9401",), "ingressmesh")
    assert done.outcome == "created" and done.mounted == ("web_cert",)
    assert "POST /services/create" in fake.seen and "POST /secrets/create" in fake.seen
    created = fake.services["ingressmesh-proxyid"]["Spec"]
    assert created["TaskTemplate"]["ContainerSpec"]["Image"] == "imlab/proxy:latest"
    assert api.info()["Swarm"]["NodeAddr"] == "10.0.0.5"  # manager_controllers' call
    assert services.current("ingressmesh_l7") is None  # its own service, by name
    assert services.tasks("ingressmesh-proxy") == [] and services.nodes() == []  # a stuck update? host-mode roll?
    # a second pass after a change (the service moved to another network): an update of its own service
    moved = cluster([service("web", {"hosts": "web.local", "port": "80"}, networks=("othernet",))],
                    [task("w1", "web", 2, network="othernet")])
    (again,) = deploy_once(services, SETTINGS, moved, ("https://10.0.0.5:9401",), "ingressmesh")
    assert again.outcome == "updated"
    assert "POST /services/ingressmesh-proxyid/update" in fake.seen


def test_the_acme_issuer_passes_with_its_certificates_and_labels_only(filtered):
    """The issuer inside l7 deploy: its certificate versions created as secrets, mounted into
    the proxy service its labels name, the replaced version removed; nothing else."""
    from ingressmesh.l7 import acme_labels, acme_names
    from ingressmesh.l7.acme_swarm import DockerSecretStore, ProxyLabelPublisher
    listen, fake = filtered
    api = _api(listen)
    services = ProxyServices(api, "reader:abc")
    store = DockerSecretStore(api, {"com.docker.stack.namespace": "ingressmesh"})
    labelled = cluster([service("web", {"hosts": "web.local", "port": "80"}) | {"labels": {
        "com.docker.lb.hosts": "web.local", "com.docker.lb.port": "80", "io.ingressmesh.lb.acme": "true"}}],
        [task("w1", "web", 2)])
    v1, v2 = acme_names.cert_secrets("web.local", 1), acme_names.cert_secrets("web.local", 2)
    for name in (*v1, *v2):
        store.create(name, b"pem", 1.8e9)
    assert store.names() == sorted((*v1, *v2)) and store.not_after(v1[0]) == 1.8e9 and store.read(v1[0]) is None
    publisher = ProxyLabelPublisher({}, lambda: None)
    publisher.answer("web.local", {"tok_" + "x" * 20: "tok_" + "x" * 20 + "." + "T" * 43})
    publisher.serve({"web.local": 1})
    (done,) = deploy_once(services, SETTINGS, labelled, ("https://10.0.0.5:9401",), "ingressmesh",
                          {"ingressmesh-proxy": publisher.labels})
    assert done.outcome == "created" and done.mounted == v1 and not done.refused
    labels = fake.services["ingressmesh-proxyid"]["Spec"]["Labels"]
    assert labels[acme_labels.CERTS] == "web.local:1" and acme_labels.http01_label("web.local") in labels
    # an l7 deploy without an issuer (no [ACME], or before the issuer starts) keeps what the service carries
    (again,) = deploy_once(services, SETTINGS, labelled, ("https://10.0.0.5:9401",), "ingressmesh")
    assert again.outcome == "unchanged" and again.mounted == v1
    publisher.serve({"web.local": 2})
    (moved,) = deploy_once(services, SETTINGS, labelled, ("https://10.0.0.5:9401",), "ingressmesh",
                           {"ingressmesh-proxy": publisher.labels})
    assert moved.outcome == "updated" and moved.mounted == v2
    for name in v1:
        store.remove(name)
    assert store.names() == sorted(v2)
    _refused(fake, lambda: api.remove_secret("webid"), "DELETE /secrets/webid", "not an ACME certificate")
    _refused(fake, lambda: api.create_secret(v1[0], b"x"), "POST /secrets/create", repr(v1[0]))  # no issuer label
    account = acme_names.account_secret("https://acme.test/dir", 1)
    _refused(fake, lambda: api.create_secret(account, b"x", labels={"io.ingressmesh.l7.acme": "true"}),
             "POST /secrets/create", repr(account))


def _refused(fake, call, *expected: str) -> None:
    before = list(fake.seen)
    with pytest.raises(docker.errors.APIError) as raised:
        call()
    assert raised.value.status_code == 403
    for part in ("docker-filter (l7-deploy):", *expected):
        assert part in raised.value.explanation, raised.value.explanation
    assert [s for s in fake.seen[len(before):] if not s.startswith("GET /")] == []  # nothing changed in dockerd


def _spec(**change) -> dict:
    token, ca = ("tokid", "ingressmesh_token_0123456789ab"), ("caid", "ingressmesh_ca_abc")
    spec = desired_spec(SETTINGS[0], cluster([], []), token, ("https://10.0.0.5:9401",), ca)
    spec["TaskTemplate"]["ContainerSpec"].update(change)
    return spec


def _create(api, spec):
    return api.create_service(spec["TaskTemplate"], name=spec["Name"], labels=spec["Labels"], mode=spec["Mode"],
                              endpoint_spec=spec["EndpointSpec"])


def test_every_other_call_is_refused_naming_it(filtered):
    listen, fake = filtered
    fake.secrets["tokid"] = {"Name": "ingressmesh_token_0123456789ab", "Labels": {}}
    api = _api(listen)
    _refused(fake, lambda: api.containers(), "GET /containers/json", "not a call l7 deploy makes")
    _refused(fake, lambda: api.create_container("busybox", "sh"), "POST /containers/create")
    _refused(fake, lambda: api.remove_service("appid"), "DELETE /services/appid")
    _refused(fake, lambda: api.services(), "GET /services", "by one name name")
    _refused(fake, lambda: api.services(filters={"name": "app"}), "'app' is neither")
    _refused(fake, lambda: api.tasks(filters={"service": "app"}), "GET /tasks", "'app' is neither")
    _refused(fake, lambda: api.tasks(), "GET /tasks", "by one service name")
    _refused(fake, lambda: api.create_secret("stolen", b"x"), "POST /secrets/create", "'stolen'")
    _refused(fake, lambda: api.update_service("appid", 3, task_template=_spec()["TaskTemplate"], name="app"),
             "POST /services/appid/update", "not a proxy service")
    _refused(fake, lambda: _create(api, _spec(Image="alpine:latest")), "POST /services/create", "'alpine:latest'")
    _refused(fake, lambda: _create(api, _spec(Mounts=[{"Type": "bind", "Source": "/", "Target": "/host"}])),
             "sets Mounts")
    _refused(fake, lambda: _create(api, _spec(Command=["sh", "-c", "id"])), "not `ingressmesh proxy`")
    _refused(fake, lambda: _create(api, _spec(Command=["ingressmesh", "proxy", "--haproxy", "/bin/sh"])),
             "'--haproxy'")
    _refused(fake, lambda: _create(api, _spec(Command=["ingressmesh", "proxy", "--token-file", "/run/secrets/x"])),
             "--token-file")
    _refused(fake, lambda: _create(api, _spec(Healthcheck={"Test": ["CMD-SHELL", "id"]})), "health check")
    _refused(fake, lambda: _create(api, _spec(Env=["PYTHONPATH=/run/secrets"])), "environment")
    for name, secret_id in (("app_db_password", "dbid"), ("ingressmesh_secret", "clusterid")):
        stolen = _spec()
        stolen["TaskTemplate"]["ContainerSpec"]["Secrets"].append(
            {"SecretID": secret_id, "SecretName": name, "File": {"Name": name, "UID": "0", "GID": "0", "Mode": 0o400}})
        _refused(fake, lambda: _create(api, stolen), f"secret {name!r} may not be mounted")
    hosted = _spec()
    hosted["TaskTemplate"]["Networks"] = [{"Target": "hostid"}]
    _refused(fake, lambda: _create(api, hosted), "'hostid' is not an overlay network")
    assert _create(api, _spec())["ID"] == "ingressmesh-proxyid"  # the spec itself passes


def test_paths_are_judged_in_canonical_form_only(filtered):
    listen, fake = filtered
    for raw in ("/v1.45/services/../containers/json", "/v1.45/containers%2Fjson", "/v1.45//containers/json",
                "/v1.45/info/./"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(listen)
            sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), (raw, answer[:200])
        assert b"docker-filter (l7-deploy)" in answer
    assert not any("containers" in s for s in fake.seen)
    with pytest.raises(Refused, match="canonical"):
        Call.parse("GET", "/v1.45/a/../b", b"")
    assert Call.parse("GET", "/v1.45/services?filters=%7B%7D", b"").path == "/services"


def test_the_unprivileged_user_must_not_reach_the_real_socket(tmp_path):
    path = tmp_path / "docker.sock"
    path.write_text("")
    os.chmod(path, 0o660)
    os.chown(path, 0, 0) if os.geteuid() == 0 else None
    owner = os.stat(path)
    check_unreachable(str(path), 65534, 65534)  # root:root 0660 (or the tester's own, not nobody's)
    for mode, uid, gid in ((0o666, 65534, 65534), (0o660, owner.st_uid, 1), (0o660, 65534, owner.st_gid)):
        os.chmod(path, mode)
        with pytest.raises(RunAsError, match="around the filter"):
            check_unreachable(str(path), uid, gid)
    with pytest.raises(RunAsError):
        check_unreachable(str(path), 0, 0)


def test_dockerd_gone_is_a_502_naming_it_and_a_check_that_needs_it_refuses(filtered):
    listen, fake = filtered
    os.unlink(os.path.join(os.path.dirname(listen), "docker.sock"))  # dockerd restarting: no socket
    api = _api(listen)
    with pytest.raises(docker.errors.APIError) as raised:
        api.info()
    assert raised.value.status_code == 502 and "docker-filter (l7-deploy): dockerd at" in raised.value.explanation
    _refused(fake, lambda: api.update_service("appid", 3, task_template=_spec()["TaskTemplate"], name="app"),
             "cannot check it: GET /services/appid")


def test_every_spec_desired_spec_makes_passes_the_rules():
    """A guard for later changes: a new option or setting in desired_spec must be taught to the
    filter (deployer_rules), or l7 deploy behind it would be refused in the stack."""
    full = parse("""
[Extensions.full]
ProxyServiceName = "full-proxy"
ProxyImage = "registry.example/ingressmesh:1.2"
ServiceCluster = "blue"
PublishMode = "host"
PublishedPort = 80
PublishedSSLPort = 443
ProxyConstraints = ["node.role==worker"]
ControllerCASecret = "operator_ca"
ProxySecrets = ["web_cert"]
""")
    secrets = {"tok": {"Name": "ingressmesh_token_0123456789ab"}, "opca": {"Name": "operator_ca"},
               "web": {"Name": "web_cert", "Labels": {}}}

    async def lookup(path):
        kind, key = path.strip("/").split("/")
        if kind == "networks":
            return {"Driver": "overlay"} if key in ("appnet", "othernet") else None
        return {"Spec": secrets[key]} if kind == "secrets" and key in secrets else None

    rules = DeployerRules(full + SETTINGS, "ingressmesh_l7", "ingressmesh")
    labelled = cluster([service("web", {"hosts": "web.local", "port": "80", "service_cluster": "blue"}),
                        service("other", {"hosts": "o.local", "port": "80", "service_cluster": "blue"},
                                networks=("othernet",))],
                       [task("w1", "web", 2), task("o1", "other", 3, network="othernet")])
    for item, ca in ((full[0], ("opca", "operator_ca")), (SETTINGS[0], None)):
        spec = desired_spec(item, labelled, ("tok", "ingressmesh_token_0123456789ab"),
                            ("https://10.0.0.5:9401", "https://10.0.0.6:9401"), ca, (("web", "web_cert"),))
        asyncio.run(rules.check(Call("POST", "/services/create", {}, json.dumps(spec).encode()), lookup))


def test_the_issuer_lease_passes_and_is_a_compare_and_swap_through_the_filter(filtered):
    """Two l7 deploys' leases over the filter: one creates it, the other only takes it once it
    stood still for ttl (its own clock), and a write at an old version loses; nothing but the
    lease's own labels may be updated."""
    from ingressmesh.l7.acme_lease import IssuerLease
    from ingressmesh.l7.acme_swarm import LEASE_SECRET, DockerLeaseStore
    listen, fake = filtered
    api = _api(listen)
    now = [100.0]
    stores = [DockerLeaseStore(api, {"com.docker.stack.namespace": "ingressmesh"}) for _ in range(2)]
    first, second = (IssuerLease(store, name, ttl=30, clock=lambda: now[0]) for store, name in zip(stores, "ab"))
    for _ in range(6):  # no lease yet: watched for a ttl (a step every 5 s) before one is created
        assert not first.step()
        now[0] += 5
    assert first.step() and first.valid() and not second.step()
    (lease_id,) = [i for i, s in fake.secrets.items() if s["Name"] == LEASE_SECRET]
    assert fake.secrets[lease_id]["Labels"]["com.docker.stack.namespace"] == "ingressmesh"  # docker stack rm takes it
    stale = stores[1].read()
    now[0] += 10
    assert first.step() and not second.step()  # renewed: the record moved, b watches again
    assert not stores[1].swap(stale, "b", stale.beat + 1)  # Swarm refuses a write at an older version
    for _ in range(5):  # a goes silent; b looks every 5 s
        now[0] += 5
        assert not second.step()
    assert not first.valid()  # a silent holder stopped issuing after ttl / 2...
    now[0] += 5
    assert second.step() and second.valid()  # ...and b takes it only once it stood still for ttl
    assert not first.step() and stores[0].read().holder == "b"
    second.release()
    assert stores[0].read().holder == "" and first.step()  # released: taken at once
    _refused(fake, lambda: api._raise_for_status(api._post_json(api._url("/secrets/{0}/update", "webid"),
                                                                params={"version": 1},
                                                                data={"Name": "web_cert", "Labels": {}})),
             "POST /secrets/webid/update", "only the ACME issuer lease's labels")
    _refused(fake, lambda: api._raise_for_status(api._post_json(api._url("/secrets/{0}/update", lease_id),
                                                                params={"version": 9},
                                                                data={"Name": LEASE_SECRET, "Data": "eA=="})),
             "POST /secrets/" + lease_id + "/update", "only the ACME issuer lease's labels")
