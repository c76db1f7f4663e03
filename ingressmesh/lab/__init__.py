"""A real multi-node Docker Swarm on one machine: one netns and one dockerd per node."""
from .config import LabConfig
from .images import BUSYBOX_IMAGE, PROXY_IMAGE, PYTHON_IMAGE
from .lab import Lab, LabError

__all__ = ["Lab", "LabConfig", "LabError", "BUSYBOX_IMAGE", "PYTHON_IMAGE", "PROXY_IMAGE"]
