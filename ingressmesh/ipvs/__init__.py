"""IPVS data plane: the same plans as the nft backend, carried out the way Docker does it.

nft marks each front-end's packets (ingressmesh's own table and mark range), one IPVS fwmark
virtual service per front-end balances them to task addresses with NAT, and nft source-NATs
what IPVS forwarded.  desired.py (plan -> services, marks), diff.py (kernel dump -> ops),
rules.py (the nft part), kernel.py (pyroute2 and namespace settings), backend.py (apply/read).
"""
