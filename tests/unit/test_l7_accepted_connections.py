"""runtime.accepted_connections on canned `show stat` replies (HAProxy 2.6's CSV columns)."""
from __future__ import annotations

import pytest

from ingressmesh.l7 import runtime

HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,conn_tot\n"


def reply(*rows: str) -> str:
    return HEADER + "".join(row + "\n" for row in rows) + "\n"


def counted(monkeypatch, text: str) -> int:
    asked = []
    monkeypatch.setattr(runtime, "send", lambda path, command, timeout=5.0: asked.append((command, timeout)) or text)
    count = runtime.accepted_connections("/run/admin.sock", timeout=0.7)
    assert asked == [("show stat -1 1 -1", 0.7)]
    return count


def test_every_client_frontend_counts_connections_not_the_stats_one(monkeypatch):
    text = reply("http,FRONTEND,,,1,3,,40,41", "https,FRONTEND,,,0,2,,9,12", "tcp-pass,FRONTEND,,,0,1,,3,3",
                 "stats,FRONTEND,,,1,1,,500,500", "be:a,BACKEND,0,0,0,1,,40,")
    assert counted(monkeypatch, text) == 41 + 12 + 3


@pytest.mark.parametrize("text", [
    "Unknown command\n",
    reply("stats,FRONTEND,,,1,1,,500,500"),  # no client frontend at all
    reply("http,FRONTEND,,,1,3,,40,"),  # the column empty: it would read as quiet forever
    "# pxname,svname,scur,stot\nhttp,FRONTEND,1,40\n",  # no conn_tot column
])
def test_a_reply_without_a_count_is_an_error_not_zero(monkeypatch, text):
    with pytest.raises(runtime.RuntimeApiError):
        counted(monkeypatch, text)
