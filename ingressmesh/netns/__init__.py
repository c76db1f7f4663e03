"""Network namespaces: enter one by name or path, run a command in it, set its sysctls."""
from .namespace import Netns, NetnsError

__all__ = ["Netns", "NetnsError"]
