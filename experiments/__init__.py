"""Command line and experiment drivers: ``python -m experiments --help``."""
