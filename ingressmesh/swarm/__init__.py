"""The only code that talks to Docker: the swarm provider (managers) and local facts (every node)."""
