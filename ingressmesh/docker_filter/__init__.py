"""A Docker API filter in front of dockerd's socket: a component gets a socket of its own on
which only the calls it makes pass (each checked), everything else is 403 naming the endpoint.

Docker has no scoped or read-only API: whoever can talk to its socket is root on the host (and
a manager's socket is root on the swarm).  `ingressmesh docker-filter` holds the real socket and
runs the component as an unprivileged user that can reach only the filtered one."""
