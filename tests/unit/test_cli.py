"""The CLI without root: plan output, and bad input rejected before any kernel access."""
import json

from click.testing import CliRunner

from ingressmesh import cli

DEMO = "examples/demo-cluster.json"


def test_plan_json_is_the_planners_output():
    result = CliRunner().invoke(cli.main, ["plan", "--cluster", DEMO, "--node", "node2", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["node_id"] == "node2"
    assert [ns["key"] for ns in plan["namespaces"]] == ["host", "ingress", "lb:appnet00000001"]


def test_plan_table_lists_vips_and_ports():
    result = CliRunner().invoke(cli.main, ["plan", "--cluster", DEMO, "--node", "node1"])
    assert result.exit_code == 0, result.output
    for text in ("10.0.1.2 (all ports)", "tcp/8080", "10.255.0.11:80", "refused"):
        assert text in result.output


def test_malformed_cluster_file_names_the_field_and_never_touches_the_kernel(tmp_path, monkeypatch):
    data = json.load(open(DEMO, encoding="utf-8"))
    data["services"][1]["ports"][0]["protocol"] = "tcpx"
    bad = tmp_path / "cluster.json"
    bad.write_text(json.dumps(data))

    def forbidden(*args, **kwargs):
        raise AssertionError("the kernel was touched")
    monkeypatch.setattr(cli, "NodeApplier", forbidden)
    result = CliRunner().invoke(cli.main, ["apply", "--cluster", str(bad), "--node", "node1"])
    assert result.exit_code != 0
    assert "services[1].ports[0].protocol: 'tcpx' is not tcp or udp" in result.output


def test_unknown_node_is_an_error():
    result = CliRunner().invoke(cli.main, ["plan", "--cluster", DEMO, "--node", "node9"])
    assert result.exit_code != 0 and "'node9' is not in" in result.output


def test_bad_ipvs_timeouts_are_refused_before_anything_runs():
    for value in ("1,2", "a,b,c", "0,120,300"):
        result = CliRunner().invoke(cli.main, ["apply", "--cluster", DEMO, "--node", "node1",
                                               "--ipvs-timeouts", value])
        assert result.exit_code == 2 and "--ipvs-timeouts" in result.output, result.output
