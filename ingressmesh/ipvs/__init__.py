"""IPVS data plane (not implemented yet; see the IPVS issue).

It will implement `ingressmesh.backend.Backend` the way Docker does: nftables `meta mark set`
rules mark packets per service (fwmarks from 256, never reused on a node), one IPVS fwmark
virtual server per mark (round robin, NAT forwarding), real servers = eligible task addresses,
draining = weight 0, and the sysctls Docker sets (conn_reuse_mode=0, expire_nodest_conn=1,
expire_quiescent_template=1, vs/conntrack=1).  This kernel has no IPVS: the backend will be
proven under QEMU.  Until then `ingressmesh doctor` reports whether IPVS is available.
"""
