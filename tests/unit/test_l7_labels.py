"""The label grammar: one family at a time, hostile values refused with the label's name."""
import pytest

from ingressmesh.l7 import grammar, labels
from ingressmesh.l7.grammar import LabelError

P = "com.docker.lb."


def parse(**found):
    return labels.parse({P + k: v for k, v in found.items()})


class TestHosts:
    def test_comma_list_is_lowered_trimmed_and_deduplicated(self):
        assert grammar.host_list("h", "App.Example.org, api.example.org,app.example.org") == \
            ("app.example.org", "api.example.org")

    def test_253_characters_with_63_character_labels_are_valid(self):
        name = ".".join(["a" * 63] * 3 + ["b" * 61])
        assert len(name) == 253
        assert grammar.host("h", name) == name

    @pytest.mark.parametrize("bad", ["a.com;x", "a.com\nb", 'a"b', "a#b", "a{b}", "-a.com", "a..b",
                                     "a_b.com", "ä.com", "a" * 64 + ".com", "", "a b", "*.a.com"])
    def test_hostile_or_malformed_hosts_are_refused(self, bad):
        with pytest.raises(LabelError) as err:
            grammar.host_list(P + "hosts", bad)
        assert P + "hosts" in str(err.value)

    def test_a_5kb_value_is_refused_before_parsing(self):
        with pytest.raises(LabelError, match="longer than 1024"):
            grammar.host_list(P + "hosts", "a," * 2500)


class TestPortsBooleansChoices:
    @pytest.mark.parametrize("value,expected", [("80", 80), (" 8080 ", 8080), ("65535", 65535)])
    def test_ports(self, value, expected):
        assert grammar.port("p", value) == expected

    @pytest.mark.parametrize("bad", ["0", "65536", "-1", "80a", "0x50", "", "８０"])
    def test_bad_ports(self, bad):
        with pytest.raises(LabelError):
            grammar.port("p", bad)

    @pytest.mark.parametrize("value,expected", [("true", True), ("TRUE", True), ("1", True), ("false", False), ("no", False)])
    def test_booleans(self, value, expected):
        assert grammar.boolean("b", value) is expected

    def test_bad_boolean_and_choice(self):
        with pytest.raises(LabelError):
            grammar.boolean("b", "maybe")
        with pytest.raises(LabelError, match="task or vip"):
            grammar.choice("m", "dnsrr", ("task", "vip"))


class TestPaths:
    @pytest.mark.parametrize("value,expected", [("/", "/"), ("/api", "/api"), ("/api/", "/api"), ("/a/b-c_d.e~f", "/a/b-c_d.e~f")])
    def test_paths(self, value, expected):
        assert grammar.path("c", value) == expected

    @pytest.mark.parametrize("bad", ["api", "/a b", "/a;b", "/a'b", "/a#b", "/a{1}", "/a//b", "/../x", "/a?x=1", "/a%2e"])
    def test_bad_paths(self, bad):
        with pytest.raises(LabelError):
            grammar.path("c", bad)


class TestRedirects:
    def test_pairs(self):
        request = parse(hosts="old.local,new.local", port="80",
                        redirects="http://old.local,https://new.local:8443/x; http://new.local,http://www.new.local")
        assert [(r.source_host, r.target) for r in request.redirects] == [
            ("old.local", "https://new.local:8443/x"), ("new.local", "http://www.new.local")]

    @pytest.mark.parametrize("bad", ["http://other.local,http://x.local", "http://old.local", "old.local,new.local",
                                     "http://old.local,javascript:alert(1)", "http://old.local,http://x.local/a b",
                                     "http://old.local,http://x.local,http://y.local"])
    def test_bad_redirects(self, bad):
        with pytest.raises(LabelError, match="redirects"):
            parse(hosts="old.local", port="80", redirects=bad)


class TestServiceLabels:
    def test_a_full_request(self):
        request = parse(hosts="a.com", port="8080", network="app", context_root="/api/",
                        context_root_rewrite="true", backend_mode="vip", service_cluster="blue")
        assert (request.hosts, request.port, request.network, request.context_root, request.rewrite,
                request.backend_mode, request.service_cluster) == (("a.com",), 8080, "app", "/api", True, "vip", "blue")

    def test_port_is_required(self):
        with pytest.raises(LabelError, match="com.docker.lb.port"):
            parse(hosts="a.com")

    def test_hosts_or_default_backend_is_required(self):
        with pytest.raises(LabelError, match="hosts"):
            parse(port="80")
        assert parse(port="80", default_backend="true").default_backend

    def test_unknown_labels_are_named(self):
        request = parse(hosts="a.com", port="80", sticky_session_cookie="sid", host="typo.com", ports="8080",
                        frobnicate="1")
        assert request.sticky_cookie == "sid" and request.port == 80
        assert request.notes == (
            "label 'com.docker.lb.frobnicate' is not an Interlock label; ignored",
            "label 'com.docker.lb.host' is not an Interlock label; ignored (did you mean com.docker.lb.hosts?)",
            "label 'com.docker.lb.ports' is not an Interlock label; ignored (did you mean com.docker.lb.port?)")

    def test_non_ascii_in_any_lb_label_refuses_the_service(self):
        with pytest.raises(LabelError, match="com.docker.lb.ssl_only"):
            parse(hosts="a.com", port="80", ssl_only="tr\u00fce")

    def test_other_labels_are_not_ours(self):
        assert not labels.wants_routing({"com.docker.stack.namespace": "x"})
        assert labels.wants_routing({P + "hosts": "a.com"})
