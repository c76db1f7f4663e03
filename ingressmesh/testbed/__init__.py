"""A routing-mesh testbed in network namespaces: nodes, overlay, tasks, clients (needs root).

Used by the real-kernel conformance suite and by `make demo`.
"""
