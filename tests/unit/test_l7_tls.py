"""TLS and session labels: their grammar, what services sharing a host or a route must agree
on, and what the renderer makes of them (nothing unchecked gets into the config)."""
from dataclasses import replace

import pytest

from ingressmesh.l7 import grammar, labels, render_tls, slots
from ingressmesh.l7.grammar import LabelError
from ingressmesh.l7.render import ProxySettings, RenderError, render_config, render_map
from ingressmesh.l7.render_tls import render_crt_list
from ingressmesh.l7.routes import Refusal, plan_routes, without_services
from ingressmesh.plan import PlanOptions

from l7_swarm import NOW, cluster, service, task

P = "com.docker.lb."


def parse(**found):
    return labels.parse({P + k: v for k, v in {"hosts": "a.com", "port": "80", **found}.items()})


class TestGrammar:
    @pytest.mark.parametrize("name", ["a", "web_cert", "stack_web.crt-2", "A" * 64])
    def test_secret_names(self, name):
        assert grammar.secret_name("s", name) == name

    @pytest.mark.parametrize("bad", ["", "-a", ".a", "_a", "a/b", "../etc/passwd", "a b", "a\nb", "A" * 65, "a;b", "ä"])
    def test_bad_secret_names(self, bad):
        with pytest.raises(LabelError):
            grammar.secret_name(P + "ssl_cert", bad)

    @pytest.mark.parametrize("name", ["SID", "JSESSIONID", "connect.sid", "__Host-session", "a+b~c"])
    def test_cookie_names(self, name):
        assert grammar.cookie_name("c", name) == name

    @pytest.mark.parametrize("bad", ["", "a b", "a;b", "a=b", "a,b", 'a"b', "a#b", "a$b", "a%b", "a'b", "a(b)",
                                     "a{b}", "a\tb", "x" * 65])
    def test_bad_cookie_names(self, bad):
        with pytest.raises(LabelError, match="cookie"):
            grammar.cookie_name(P + "sticky_session_cookie", bad)

    def test_path_lists(self):
        assert grammar.path_list("w", "/ws, /live/,/ws") == ("/ws", "/live")
        for bad in ("/ws;/x", "ws", "/a b", "/ws,", ",".join(["/a"] * 65)):
            with pytest.raises(LabelError):
                grammar.path_list(P + "websocket_endpoints", bad)


class TestTlsLabels:
    def test_a_full_tls_request(self):
        request = parse(ssl_cert="c", ssl_key="k", ssl_only="true", ssl_backend="true",
                        ssl_backend_tls_verify="required", ssl_backend_ca="ca", sticky_session_cookie="SID",
                        ip_hash="yes", websocket_endpoints="/ws")
        tls = request.tls
        assert (tls.cert, tls.key, tls.only, tls.backend, tls.verify, tls.ca) == ("c", "k", True, True, "required", "ca")
        assert (request.sticky_cookie, request.ip_hash, request.websocket_endpoints) == ("SID", True, ("/ws",))
        assert not request.notes

    @pytest.mark.parametrize("found,label", [
        ({"ssl_cert": "c"}, "ssl_key"), ({"ssl_key": "k"}, "ssl_cert"),
        ({"ssl_only": "true"}, "ssl_only"),
        ({"ssl_passthrough": "true", "ssl_cert": "c", "ssl_key": "k"}, "ssl_passthrough"),
        ({"ssl_passthrough": "true", "ssl_backend": "true"}, "ssl_backend"),
        ({"ssl_backend_tls_verify": "required", "ssl_backend_ca": "ca"}, "ssl_backend_tls_verify"),
        ({"ssl_backend": "true", "ssl_backend_tls_verify": "required"}, "ssl_backend_tls_verify"),
        ({"ssl_backend": "true", "ssl_backend_ca": "ca"}, "ssl_backend_ca"),
        ({"ssl_backend": "true", "ssl_backend_tls_verify": "maybe"}, "ssl_backend_tls_verify"),
        ({"ssl_passthrough": "true", "context_root": "/api"}, "context_root"),
        ({"ssl_passthrough": "true", "sticky_session_cookie": "SID"}, "sticky_session_cookie"),
        ({"ssl_passthrough": "true", "websocket_endpoints": "/ws"}, "websocket_endpoints"),
        ({"ssl_only": "ja"}, "ssl_only"), ({"ip_hash": "2"}, "ip_hash"),
        ({"ssl_cert": "../x", "ssl_key": "k"}, "ssl_cert"),
    ])
    def test_combinations_that_mean_nothing_are_refused_by_label(self, found, label):
        with pytest.raises(LabelError, match=P + label):
            parse(**found)

    def test_tls_needs_hosts(self):
        with pytest.raises(LabelError, match="per host name"):
            labels.parse({P + "port": "80", P + "default_backend": "true", P + "ssl_cert": "c", P + "ssl_key": "k"})

    def test_passthrough_with_labels_that_do_nothing_is_fine(self):
        assert parse(ssl_passthrough="true", context_root="/", context_root_rewrite="false",
                     default_backend="false").tls.passthrough


def plan(*services, tasks=()):
    return plan_routes(cluster(list(services), list(tasks)), options=PlanOptions(now=NOW, drain_grace=10.0))


class TestPlanner:
    def test_services_on_one_host_must_agree_on_its_tls_whatever_their_context_root(self):
        table = plan(service("alpha", {"hosts": "a.com", "port": "80", "ssl_cert": "c", "ssl_key": "k"}),
                     service("beta", {"hosts": "a.com,b.com", "port": "80", "context_root": "/api"}),
                     tasks=[task("a1", "alpha", 2), task("b1", "beta", 3)])
        assert [(r.service, r.reason) for r in table.refused] == [
            ("beta", "host a.com: ssl_cert=(none), ssl_key=(none) differs from ssl_cert=c, ssl_key=k: "
                     "TLS and redirects are chosen per host; alpha keeps the host")]
        assert {(r.host, r.path) for r in table.routes} == {("a.com", "/"), ("b.com", "/api")}  # beta keeps b.com
        assert [(t.host, t.services, t.cert) for t in table.tls_hosts] == [("a.com", ("alpha",), "c")]

    def test_route_claimants_must_agree_on_sessions_and_backend_tls(self):
        table = plan(service("alpha", {"hosts": "a.com", "port": "80", "sticky_session_cookie": "SID"}),
                     service("beta", {"hosts": "a.com", "port": "80", "ip_hash": "true"}),
                     tasks=[task("a1", "alpha", 2), task("b1", "beta", 3)])
        assert [r.service for r in table.refused] == ["beta"]
        assert "sticky_session_cookie=(none), ip_hash=true differs from sticky_session_cookie=SID, ip_hash=false" \
            in table.refused[0].reason

    def test_canary_services_agreeing_on_everything_share_one_backend(self):
        same = {"hosts": "a.com", "port": "80", "ssl_cert": "c", "ssl_key": "k", "sticky_session_cookie": "SID",
                "ssl_backend": "true"}
        table = plan(service("v1", same), service("v2", same), tasks=[task("a", "v1", 2), task("b", "v2", 3)])
        assert not table.refused and len(table.backends) == 1
        backend = table.backends[0]
        assert (backend.cookie, backend.ssl, backend.proto, len(backend.servers)) == ("SID", "none", "http", 2)
        assert table.tls_hosts[0].services == ("v1", "v2")

    def test_passthrough_routes_are_tcp_and_not_in_the_http_map(self):
        table = plan(service("p", {"hosts": "p.com", "port": "443", "ssl_passthrough": "true", "ip_hash": "1"}),
                     service("w", {"hosts": "w.com", "port": "80"}),
                     tasks=[task("p1", "p", 2), task("w1", "w", 3)])
        backend = table.backend(next(r.backend for r in table.routes if r.host == "p.com"))
        assert (backend.proto, backend.balance) == ("tcp", "source")
        assert table.map_entries() == {"w.com/": "be:w"} and render_map(table) == "w.com/ be:w\n"
        assert table.tls_hosts[0].passthrough

    def test_without_services_drops_their_routes_redirects_and_tls_hosts(self):
        table = plan(service("a", {"hosts": "a.com,old.com", "port": "80", "ssl_cert": "c", "ssl_key": "k",
                                   "redirects": "http://old.com,https://a.com"}),
                     service("b", {"hosts": "b.com", "port": "80"}),
                     tasks=[task("a1", "a", 2), task("b1", "b", 3)])
        cut = without_services(table, [Refusal("a", "secret c is not available")])
        assert {r.host for r in cut.routes} == {"b.com"} and not cut.redirects and not cut.tls_hosts
        assert [b.name for b in cut.backends] == ["be:b"] and cut.refused == (Refusal("a", "secret c is not available"),)
        assert table.shape() != cut.shape()


def rendered(table, **settings):
    return render_config(table, slots.assign({}, table), ProxySettings(https_port=8443, **settings))


class TestRender:
    def resolved(self, *services, tasks=()):
        table = plan(*services, tasks=tasks)
        return replace(table, tls_hosts=tuple(replace(t, pem=f"/w/tls/{t.host}.pem") if t.cert else t
                                              for t in table.tls_hosts),
                       backends=tuple(replace(b, ca_file="/w/tls/ca.pem") if b.ssl == "required" else b
                                      for b in table.backends))

    def test_terminated_hosts_bind_the_https_port_directly_with_alpn(self):
        table = self.resolved(service("a", {"hosts": "a.com,www.a.com", "port": "80", "ssl_cert": "c",
                                            "ssl_key": "k", "ssl_only": "true"}), tasks=[task("a1", "a", 2)])
        text = rendered(table, crt_list="/w/crt-list-3")
        assert "frontend https\n    bind 0.0.0.0:8443 ssl crt-list /w/crt-list-3 alpn h2,http/1.1\n" in text
        assert "http-request set-header X-Forwarded-Proto https" in text and "mode tcp" not in text
        assert ("http-request redirect location https://%[var(txn.host)]:8443%[pathq] code 301 "
                "if { var(txn.host) -m str a.com www.a.com }") in text
        assert render_crt_list(table) == "/w/tls/a.com.pem a.com\n/w/tls/www.a.com.pem www.a.com\n"
        assert ":443%" not in rendered(table, https_redirect_port=443)

    def test_passthrough_puts_an_sni_router_in_front_of_the_terminating_listener(self):
        table = self.resolved(service("a", {"hosts": "a.com", "port": "80", "ssl_cert": "c", "ssl_key": "k"}),
                              service("p", {"hosts": "p.com", "port": "443", "ssl_passthrough": "true"}),
                              tasks=[task("a1", "a", 2), task("p1", "p", 3)])
        text = rendered(table, admin_socket="/w/admin.sock", tls_socket="im-test")
        assert "    use_backend be:p if { req_ssl_sni -i p.com }\n    default_backend im:tls-terminate\n" in text
        assert "    server terminate abns@im-test send-proxy-v2\n" in text
        assert "frontend https-terminated\n    bind abns@im-test accept-proxy ssl crt-list" in text
        backend_p = text[text.index("\nbackend be:p"):].split("\n\n")[0]
        assert "mode tcp" in backend_p and "X-Upstream" not in backend_p

    def test_every_slot_carries_the_backend_flags(self):
        table = self.resolved(service("b", {"hosts": "b.com", "port": "80", "ssl_backend": "true",
                                            "ssl_backend_tls_verify": "required", "ssl_backend_ca": "ca",
                                            "sticky_session_cookie": "SID", "ip_hash": "true"}),
                              tasks=[task("b1", "b", 2)])
        text = rendered(table)
        assert "    server s1 10.0.1.2:80 weight 1 ssl verify required ca-file /w/tls/ca.pem sni var(txn.host)" in text
        assert "    server s16 127.0.0.1:1 disabled weight 0 ssl verify required ca-file /w/tls/ca.pem" in text
        assert "balance source\n    hash-type consistent\n    cookie SID prefix nocache dynamic\n" in text
        key = render_tls.cookie_key("", "be:b")
        assert f"    dynamic-cookie-key {key}\n" in text and len(key) == 32

    def test_sticky_cookie_keys_follow_the_seed_and_the_backend(self):
        """Every replica (same token, same seed) names a task by the same cookie value; another
        cluster's or another backend's key differs."""
        assert render_tls.cookie_key("t", "be:a") == render_tls.cookie_key("t", "be:a")
        assert len({render_tls.cookie_key("t", "be:a"), render_tls.cookie_key("u", "be:a"),
                    render_tls.cookie_key("t", "be:b")}) == 3

    def test_unresolved_secrets_and_no_https_port(self):
        table = plan(service("a", {"hosts": "a.com", "port": "80", "ssl_cert": "c", "ssl_key": "k"}),
                     tasks=[task("a1", "a", 2)])
        with pytest.raises(RenderError, match="not resolved"):
            rendered(table)
        assert "frontend https" not in render_config(table, slots.assign({}, table), ProxySettings())

    def test_settings_that_are_not_safe_never_reach_the_text(self):
        table = self.resolved(service("a", {"hosts": "a.com", "port": "80", "ssl_cert": "c", "ssl_key": "k"}),
                              tasks=[task("a1", "a", 2)])
        with pytest.raises(RenderError):
            rendered(table, crt_list="/w/crt list")
        evil = replace(table, tls_hosts=(replace(table.tls_hosts[0], pem="/w/a.pem\nfrontend x"),))
        with pytest.raises(RenderError):
            render_crt_list(evil)


class TestBackendTlsTargets:
    """Which tasks the proxy shakes hands with to name a verified backend's refused tasks."""

    def test_only_verified_backends_a_few_active_tasks_each_with_the_sni_name(self):
        from ingressmesh.l7.backend_tls import PER_BACKEND, targets
        verified = {"hosts": "v.com,w.com", "port": "443", "ssl_backend": "true",
                    "ssl_backend_tls_verify": "required", "ssl_backend_ca": "the_ca"}
        table = TestRender().resolved(
            service("v", verified), service("n", {"hosts": "n.com", "port": "443", "ssl_backend": "true"}),
            service("p", {"hosts": "p.com", "port": "80"}),
            tasks=[task(f"v{i}", "v", 2 + i) for i in range(5)] + [task("n1", "n", 20), task("p1", "p", 21)])
        found = targets(table)
        assert len(found) == PER_BACKEND == 3
        assert {(t.services, t.host, t.ca_file, t.ca_secret, t.port) for t in found} == {
            (("v",), "v.com", "/w/tls/ca.pem", "the_ca", 443)}
        assert len({t.address for t in found}) == 3
