"""nftables data plane: render plans to one private table per namespace, apply as transactions."""
