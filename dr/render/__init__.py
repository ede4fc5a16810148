"""SceneSpec -> Blender Cycles -> frames and passes; the env-map geometry.

The only layer that imports `bpy`, and only inside the process that renders.
"""
