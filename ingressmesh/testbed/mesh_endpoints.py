"""What every way of running ingressmesh on the lab offers the tests: the controller's and agents'
addresses, and their JSON endpoints read from inside node1's namespace (where the lab's addresses
live).  SwarmMesh runs host processes, StackMesh the swarm stack; the tests do not care which."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Optional

from ..netns import Netns

CONTROLLER_PORT = 9401
AGENT_PORT = 9402


class MeshEndpoints:
    lab = None  # set by the subclass

    @property
    def controller_url(self) -> str:
        return f"http://{self.lab.node_address(1)}:{CONTROLLER_PORT}"

    def agent_url(self, n: int) -> str:
        return f"http://{self.lab.node_address(n)}:{AGENT_PORT}"

    def get(self, url: str, timeout: float = 3.0) -> tuple[int, dict]:
        """GET a JSON endpoint from inside node1's namespace (where the lab's addresses live)."""
        with Netns.from_ref(self.lab.node_netns(1)).entered():
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
                status, body = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, body = err.code, err.read()
            except (urllib.error.URLError, OSError) as err:
                raise OSError(f"GET {url}: {err}") from None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"text": body.decode(errors="replace")}

    def agent_health(self, n: int) -> tuple[int, dict]:
        return self.get(self.agent_url(n) + "/healthz")

    def wait_synced(self, timeout: float = 30.0, since: Optional[int] = None) -> int:
        """Until every agent has applied the same (and, with `since`, a newer) snapshot; its version."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                states = [self.agent_health(n) for n in self.lab.config.node_numbers]
                versions = {body.get("applied_version") for _, body in states}
                last = states
                if len(versions) == 1 and None not in versions and all(code == 200 for code, _ in states):
                    version = versions.pop()
                    if since is None or version > since:
                        return version
            except OSError as err:
                last = err
            time.sleep(0.2)
        raise TimeoutError(f"agents not in sync after {timeout:g} s: {last}")
