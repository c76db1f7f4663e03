"""ingressmesh: an open, inspectable routing mesh manager for Docker Swarm."""

__version__ = "0.1.0"
