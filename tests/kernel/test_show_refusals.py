"""`ingressmesh show --controller` names what the controller refused and what the L7 proxies
refuse (issue 20, point 2: every refusal appears in `show`), beside the kernel tables it reads."""
import json
import pathlib
import subprocess
import sys
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "l7"))
from fake_controller import FakeController  # noqa: E402  (the L7 tests' stand-in controller)

pytestmark = pytest.mark.kernel

TOKEN = "t0ken-for-the-show-refusals-test"
REFUSAL = "service 'absurd': ports[0].published_port: 70000 is not a port (1-65535)"
L7_REFUSAL = "service bad: label com.docker.lb.port='not-a-port': a port is a number from 1 to 65535"


@pytest.fixture
def empty_netns(root):
    name = f"imshow-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=True, timeout=30)


def test_show_lists_the_controllers_refusals(empty_netns, tmp_path):
    controller = FakeController(TOKEN)
    try:
        bad_label = {"id": "bad", "name": "bad", "labels": {"com.docker.lb.hosts": "b.test",
                                                            "com.docker.lb.port": "not-a-port"}}
        controller.publish({"nodes": [{"id": "n1", "hostname": "node1", "address": "10.9.0.1"}],
                            "networks": [], "services": [bad_label], "tasks": [], "refused": [REFUSAL]})
        token = tmp_path / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        argv = [sys.executable, "-m", "ingressmesh", "show", "--netns", empty_netns, "--controller", controller.url,
                "--token-file", str(token)]
        shown = subprocess.run(argv + ["--json"], capture_output=True, text=True, timeout=60, check=True).stdout
        assert json.loads(shown)["(refused by the controller)"] == [REFUSAL]
        assert json.loads(shown)["(refused by the L7 proxies)"] == [L7_REFUSAL]
        table = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
        assert f"refused by the controller {REFUSAL}" in " ".join(table.split())
        assert f"refused by the L7 proxies {L7_REFUSAL}" in " ".join(table.split())
    finally:
        controller.close()
