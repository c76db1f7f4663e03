"""`python -m ingressmesh` runs the CLI."""
from .cli import main

main()
