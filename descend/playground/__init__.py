"""``descend playground``: a local web page that runs descend's optimizers on 2-D landscapes.

``api`` holds everything the page asks for as plain Python; ``server`` serves it.
"""
from .api import optimizer_catalog, run_setup, surface, trajectory
from .landscapes import LANDSCAPES, Landscape, make_landscape

__all__ = ["LANDSCAPES", "Landscape", "make_landscape", "optimizer_catalog", "run_setup", "surface", "trajectory"]
