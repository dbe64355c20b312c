"""Study configs for ``python -m experiments --config configs/<study>.py``."""
