"""`ingressmesh docker-filter` runs its command as nobody (root needed to drop to it): the command
reaches the filtered socket only, with no groups and no_new_privs; the real socket (root, 0660)
is out of its reach.  A fake dockerd on a unix socket stands in for the real one."""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

FAKE = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web
    async def answer(request):
        return web.json_response({"ApiVersion": "1.45", "path": request.path})
    async def main():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, sys.argv[1]).start()
        print("ready", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")
PROBE = textwrap.dedent("""
    import os, socket, sys
    def get(path, sock_path):
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(sock_path)
                sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: docker\\r\\nConnection: close\\r\\n\\r\\n".encode())
                out = b""
                while chunk := sock.recv(65536):
                    out += chunk
            return out.split(b"\\r\\n")[0].decode() + " " + out.split(b"\\r\\n\\r\\n", 1)[1].decode()
        except OSError as err:
            return f"{type(err).__name__}: {err.strerror}"
    status = open("/proc/self/status").read()
    print("ids", os.getuid(), os.getgid(), os.getgroups(), status.split("NoNewPrivs:")[1].split()[0])
    print("info", get("/v1.45/info", sys.argv[1]))
    print("containers", get("/v1.45/containers/json", sys.argv[1]))
    print("real", get("/v1.45/info", sys.argv[2]))
""")


@pytest.fixture()
def open_dir():
    """A directory nobody can traverse (pytest's tmp_path lies under a 0700 directory)."""
    import pathlib
    path = tempfile.mkdtemp(prefix="im-docker-filter-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path)


def test_the_command_runs_as_nobody_and_reaches_only_the_filtered_socket(open_dir):
    tmp_path = open_dir
    real, listen = str(tmp_path / "docker.sock"), str(tmp_path / "filtered" / "docker.sock")
    (tmp_path / "l7.toml").write_text("[Extensions.default]\nPublishedPort = 8095\n")
    (tmp_path / "probe.py").write_text(PROBE)
    for name in ("l7.toml", "probe.py"):
        os.chmod(tmp_path / name, 0o644)
    fake = subprocess.Popen([sys.executable, "-c", FAKE, real], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        os.chmod(real, 0o660)  # root:root, like dockerd's socket (group docker, which nobody is not in)
        done = subprocess.run([sys.executable, "-m", "ingressmesh", "docker-filter", "--for", "l7-deploy",
                               "--config", str(tmp_path / "l7.toml"), "--upstream", real, "--listen", listen, "--",
                               "/usr/bin/python3", str(tmp_path / "probe.py"), listen, real],
                              capture_output=True, text=True, timeout=60)
    finally:
        fake.kill()
        fake.wait(10)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert lines["ids"] == "65534 65534 [] 1"
    assert lines["info"].startswith("HTTP/1.1 200") and '"path": "/v1.45/info"' in lines["info"]
    assert lines["containers"].startswith("HTTP/1.1 403") and "GET /containers/json refused" in lines["containers"]
    assert lines["real"] == "PermissionError: Permission denied"
    assert "GET /containers/json refused" in done.stderr  # logged by the filter


def test_a_real_socket_the_user_could_reach_is_refused_before_anything_runs(tmp_path):
    real = tmp_path / "docker.sock"
    real.write_text("")
    os.chmod(real, 0o666)
    (tmp_path / "l7.toml").write_text("[Extensions.default]\nPublishedPort = 8095\n")
    done = subprocess.run([sys.executable, "-m", "ingressmesh", "docker-filter", "--for", "l7-deploy", "--config",
                           str(tmp_path / "l7.toml"), "--upstream", str(real), "--listen", str(tmp_path / "f.sock"),
                           "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "would reach dockerd around the filter" in done.stderr
    assert not os.path.exists(tmp_path / "f.sock")
