"""Plumbing shared by the long-running commands (controller, agent): sd_notify, metrics,
a small JSON HTTP server, and the shared bearer token."""
