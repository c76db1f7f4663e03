"""`python -m ingressmesh.lab up|down|status|exec|docker` (what scripts/lab runs)."""
from ..cli.lab import lab_group

if __name__ == "__main__":
    lab_group(prog_name="lab")
