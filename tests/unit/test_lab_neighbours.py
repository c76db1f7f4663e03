"""raise_limits on a stand-in /proc/sys (the real one is checked on the lab: tests/swarm/test_lab_neighbours_lab.py)."""
import os

from ingressmesh.lab import neighbours
from ingressmesh.lab.state import LabState


def _proc(tmp_path, values):
    for key, value in values.items():
        family, name = key.split(".")
        path = tmp_path / "net" / family / "neigh" / "default"
        path.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"{value}\n")
    return str(tmp_path)


def test_only_lower_limits_are_raised_and_what_was_found_is_recorded(tmp_path):
    proc = _proc(tmp_path, {"ipv4.gc_thresh1": 128, "ipv4.gc_thresh2": 512, "ipv4.gc_thresh3": 100000})
    state = LabState(str(tmp_path / "state.json"))
    assert neighbours.raise_limits(state, proc) == {"ipv4.gc_thresh1": 128, "ipv4.gc_thresh2": 512}
    assert neighbours.current(proc) == {"ipv4.gc_thresh1": 8192, "ipv4.gc_thresh2": 49152, "ipv4.gc_thresh3": 100000}
    assert LabState.load(str(tmp_path / "state.json")).data[neighbours.STATE_KEY] == {
        "ipv4.gc_thresh1": 128, "ipv4.gc_thresh2": 512}
    assert not os.path.exists(tmp_path / "net" / "ipv6")  # a kernel without IPv6: nothing made up
    assert neighbours.raise_limits(state, proc) == {}  # a second lab changes nothing
