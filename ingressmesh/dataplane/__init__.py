"""The data-plane helpers between a plan and the kernel: choosing a backend, applying a node
plan namespace by namespace, where Docker keeps its namespaces, conntrack clean-up, and the
rows `show` prints.  The backends themselves live in `ingressmesh/nft/` and `ingressmesh/ipvs/`."""
