"""The daemons' command lines refuse bad set-ups with errors that name the culprit."""
import socket

from click.testing import CliRunner

from ingressmesh.cli import main
from ingressmesh.daemon.token import generate_token, write_token


def test_controller_names_a_busy_listen_address(tmp_path):
    token = tmp_path / "token"
    write_token(str(token), generate_token())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["controller", "--docker", "unix:///nonexistent.sock", "--token-file",
                                           str(token), "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code != 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.output


def test_a_short_token_file_is_refused_by_name(tmp_path):
    token = tmp_path / "token"
    token.write_text("short\n")
    token.chmod(0o600)
    result = CliRunner().invoke(main, ["controller", "--token-file", str(token), "--listen", "127.0.0.1:0"])
    assert result.exit_code != 0 and str(token) in result.output


def test_agent_without_a_reachable_dockerd_says_which(tmp_path):
    token = tmp_path / "token"
    write_token(str(token), generate_token())
    result = CliRunner().invoke(main, ["agent", "--controller", "http://127.0.0.1:9", "--token-file", str(token),
                                       "--docker", "unix:///nonexistent/docker.sock"])
    assert result.exit_code != 0
    assert "cannot learn this node's swarm id from unix:///nonexistent/docker.sock" in result.output
