"""`docker service logs` on dockerd 20.10 now and then never ends its stream (CI at 51124c0
waited 60 s, then failed a test whose assertions had passed): Lab.service_logs gives back the
lines that came within its bound instead of raising."""
import stat
import time

from ingressmesh.lab import Lab, LabConfig


def _fake_docker(tmp_path, body: str) -> str:
    path = tmp_path / "docker"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_stream_that_never_ends_gives_back_what_came_within_the_bound(tmp_path, monkeypatch):
    # exec: the stand-in is one process, as the docker CLI is, so the kill closes its pipes
    monkeypatch.setattr("ingressmesh.lab.lab.DOCKER", _fake_docker(
        tmp_path, 'echo "proxy.1@node1    | no longer accepting"\necho "proxy.2@node2    | on stderr" >&2\nexec sleep 30\n'))
    lab = Lab(LabConfig(lab_dir=str(tmp_path), nodes=1))
    started = time.monotonic()
    text = lab.service_logs("proxy", timeout=1)
    assert time.monotonic() - started < 10
    assert "no longer accepting" in text and "on stderr" in text


def test_a_stream_that_ends_is_returned_whole_with_the_arguments_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("ingressmesh.lab.lab.DOCKER", _fake_docker(tmp_path, 'echo "$@"\n'))
    lab = Lab(LabConfig(lab_dir=str(tmp_path), nodes=1))
    text = lab.service_logs("ingressmesh_agent", tail=7)
    argv = text.split()
    assert argv[-1] == "ingressmesh_agent" and argv[argv.index("--tail") + 1] == "7"
    assert argv[argv.index("-H") + 1] == lab.docker_socket(1)  # node 1: a manager answers for every node
