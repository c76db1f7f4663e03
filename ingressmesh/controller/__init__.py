"""The controller: runs on a Swarm manager, serves the cluster snapshot to the agents."""
