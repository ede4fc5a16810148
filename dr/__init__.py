"""dr: training data for neural inverse and forward rendering (the DiffusionRenderer family).

Importing this package is cheap: it pulls in neither Blender, Ray nor torch. See
DESIGN.md section 1 for the layers below it.
"""

__version__ = "0.1.0"
