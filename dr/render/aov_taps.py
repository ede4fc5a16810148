"""Shader AOVs tapped from whatever feeds each material's BSDFs (bpy; render worker only).

For every material, the shader tree under the active Material Output's Surface is walked:
Principled BSDFs give their Base Color, Roughness and Metallic inputs (the links that feed them
- image textures, Separate Color of a packed map, math nodes - or their constants); Mix Shader
and Add Shader nodes mix the tapped values with the same factor; Diffuse, Glossy and Metallic
BSDFs map onto the Principled parameters. What cannot be tapped (no surface, emission only,
node groups, ...) gets explicit fallback values, and the fallback is reported. The values go
to AOV outputs, so the one Cycles render that makes rgb also makes the material passes; no
second render and no material swap.

Transparency (alpha-cut-out leaves, fences, decals; glTF alphaMode MASK and BLEND): Cycles writes
a shader AOV at every surface a camera ray meets until it writes the data passes (Normal, Depth),
which it does at the first surface whose alpha reaches the view layer's pass alpha threshold;
rays go on through the others. So every tapped value (and the coverage) is multiplied by a gate,
1 where the surface's alpha reaches the threshold and 0 where it does not: a cut-out part adds
nothing, the surface behind it writes the AOVs, and every pass describes the surface that the
normal pass and rgb show. The alpha is tapped with the values (Principled Alpha; a Transparent
BSDF is alpha 0; Mix and Add Shaders combine it as Cycles combines transparency); a material that
is opaque everywhere gets no gate nodes at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy

AOVS = {"basecolor": "COLOR", "roughness": "VALUE", "metallic": "VALUE", "depth": "VALUE", "coverage": "VALUE"}
FALLBACK = {"basecolor": (0.5, 0.5, 0.5), "roughness": 0.5, "metallic": 0.0}
PARAMS = ("basecolor", "roughness", "metallic")


@dataclass
class Src:
    """A tapped value: an output socket to link, or a constant (float or RGB tuple)."""

    socket: object = None
    const: object = None


@dataclass
class Taps:
    """The tapped values of a shader (None for a Transparent BSDF, which has none) and its alpha
    (1 - the weight of its transparent closures)."""

    values: dict[str, Src] | None
    notes: list[str] = field(default_factory=list)
    alpha: Src = field(default_factory=lambda: Src(const=1.0))


def _input_src(sock, want_color: bool) -> Src:
    if sock.is_linked:
        return Src(socket=sock.links[0].from_socket)
    v = sock.default_value
    return Src(const=tuple(v[:3]) if want_color else float(v))


def _find(sockets, identifier):
    return next(s for s in sockets if s.identifier == identifier)


def _mix(nt, fac, a: Src, b: Src, color: bool) -> Src:
    """Linear mix of two tapped values with the Mix Shader's factor (a Src)."""
    if a.const is not None and b.const is not None and fac.const is not None:
        f = fac.const
        if color:
            return Src(const=tuple((1 - f) * x + f * y for x, y in zip(a.const, b.const)))
        return Src(const=(1 - f) * a.const + f * b.const)
    node = nt.nodes.new("ShaderNodeMix")
    node.data_type = "RGBA" if color else "FLOAT"
    node.blend_type = "MIX"
    node.clamp_factor = True
    kind = "Color" if color else "Float"
    for ident, src in (("Factor_Float", fac), (f"A_{kind}", a), (f"B_{kind}", b)):
        s = _find(node.inputs, ident)
        if src.socket is not None:
            nt.links.new(src.socket, s)
        else:
            s.default_value = (*src.const, 1.0) if (color and ident != "Factor_Float") else src.const
    return Src(socket=_find(node.outputs, f"Result_{kind}"))


def _math(nt, op: str, a: Src, b: Src) -> Src:
    """a <op> b for floats (Math node; folded when both are constants)."""
    if a.const is not None and b.const is not None:
        x, y = float(a.const), float(b.const)
        return Src(const={"ADD": x + y, "SUBTRACT": x - y, "MULTIPLY": x * y, "LESS_THAN": float(x < y)}[op])
    node = nt.nodes.new("ShaderNodeMath")
    node.operation = op
    for sock, src in zip(node.inputs[:2], (a, b)):
        if src.socket is not None:
            nt.links.new(src.socket, sock)
        else:
            sock.default_value = float(src.const)
    return Src(socket=node.outputs[0])


def _scale(nt, v: Src, gate: Src, color: bool) -> Src:
    """v * gate (gate 0 or 1); v unchanged where the gate is the constant 1."""
    if gate.const == 1.0:
        return v
    if gate.const == 0.0:
        return Src(const=(0.0, 0.0, 0.0) if color else 0.0)
    if not color:
        return _math(nt, "MULTIPLY", v, gate)
    node = nt.nodes.new("ShaderNodeVectorMath")
    node.operation = "SCALE"
    vec, scale = node.inputs[0], _find(node.inputs, "Scale")
    if v.socket is not None:
        nt.links.new(v.socket, vec)
    else:
        vec.default_value = tuple(v.const[:3])
    nt.links.new(gate.socket, scale)
    return Src(socket=_find(node.outputs, "Vector"))


def _tap_shader(nt, out_socket, depth: int = 0) -> Taps | None:
    """Taps of the shader that ``out_socket`` carries, or None if it holds no BSDF to tap."""
    node = out_socket.node
    kind = node.bl_idname
    if depth > 32:
        return None
    if kind == "NodeReroute":
        inp = node.inputs[0]
        return _tap_shader(nt, inp.links[0].from_socket, depth + 1) if inp.is_linked else None
    if kind == "ShaderNodeBsdfPrincipled":
        return Taps({"basecolor": _input_src(node.inputs["Base Color"], True),
                     "roughness": _input_src(node.inputs["Roughness"], False),
                     "metallic": _input_src(node.inputs["Metallic"], False)},
                    alpha=_input_src(node.inputs["Alpha"], False))
    if kind == "ShaderNodeBsdfTransparent":
        return Taps(None, alpha=Src(const=0.0))
    if kind == "ShaderNodeBsdfDiffuse":
        return Taps({"basecolor": _input_src(node.inputs["Color"], True), "roughness": Src(const=1.0),
                     "metallic": Src(const=0.0)}, ["Diffuse BSDF read as roughness 1, metallic 0"])
    if kind in ("ShaderNodeBsdfGlossy", "ShaderNodeBsdfAnisotropic"):
        return Taps({"basecolor": _input_src(node.inputs["Color"], True),
                     "roughness": _input_src(node.inputs["Roughness"], False), "metallic": Src(const=1.0)},
                    ["Glossy BSDF read as metallic 1"])
    if kind == "ShaderNodeBsdfMetallic":
        return Taps({"basecolor": _input_src(node.inputs["Base Color"], True),
                     "roughness": _input_src(node.inputs["Roughness"], False), "metallic": Src(const=1.0)})
    if kind in ("ShaderNodeMixShader", "ShaderNodeAddShader"):
        shaders = [s for s in node.inputs if s.type == "SHADER"]
        sides = [_tap_shader(nt, s.links[0].from_socket, depth + 1) if s.is_linked else None for s in shaders]
        if sides[0] is None and sides[1] is None:
            return None
        if sides[0] is None or sides[1] is None:
            only = sides[0] or sides[1]
            return Taps(only.values, only.notes + [f"{node.name}: one side holds no BSDF, the other is used alone"],
                        alpha=only.alpha)
        if kind == "ShaderNodeMixShader":
            fac = _input_src(node.inputs[0], False)
            notes = []
            alpha = _mix(nt, fac, sides[0].alpha, sides[1].alpha, False)
        else:
            fac = Src(const=0.5)
            notes = [f"{node.name}: Add Shader averaged"]
            # the transparent weights add up: alpha_a + alpha_b - 1
            alpha = _math(nt, "SUBTRACT", _math(nt, "ADD", sides[0].alpha, sides[1].alpha), Src(const=1.0))
        if sides[0].values is None or sides[1].values is None:  # a side is a Transparent BSDF
            only = sides[1] if sides[0].values is None else sides[0]
            return Taps(only.values, sides[0].notes + sides[1].notes, alpha=alpha)
        values = {p: _mix(nt, fac, sides[0].values[p], sides[1].values[p], p == "basecolor") for p in PARAMS}
        return Taps(values, sides[0].notes + sides[1].notes + notes, alpha=alpha)
    return None


def _active_output(nt):
    outs = [n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputMaterial" and n.target in ("ALL", "CYCLES")]
    active = [n for n in outs if n.is_active_output]
    return (active or outs or [None])[0]


def _aov(nt, name: str, src: Src | None = None, socket=None) -> None:
    node = nt.nodes.new("ShaderNodeOutputAOV")
    node.aov_name = name
    inp = node.inputs["Color" if AOVS[name] == "COLOR" else "Value"]
    if socket is not None:
        nt.links.new(socket, inp)
    elif src.socket is not None:
        nt.links.new(src.socket, inp)
    else:
        inp.default_value = (*src.const, 1.0) if AOVS[name] == "COLOR" else src.const


def tap_material(mat, alpha_threshold: float = 0.5) -> dict:
    """Add the AOV outputs to one material; returns its report {material, tapped, fallback, notes,
    alpha_cut}. ``alpha_threshold``: the view layer's pass_alpha_threshold (see the module docstring)."""
    nt = mat.node_tree
    out = _active_output(nt)
    taps = None
    reason = None
    if out is None:
        reason = "no Material Output node"
    elif not out.inputs["Surface"].is_linked:
        reason = "nothing connected to the Surface output"
    else:
        taps = _tap_shader(nt, out.inputs["Surface"].links[0].from_socket)
        if taps is None:
            reason = f"surface shader {out.inputs['Surface'].links[0].from_node.bl_idname} has no BSDF to tap"
    if taps is None:
        taps = Taps({p: Src(const=FALLBACK[p]) for p in PARAMS})
    elif taps.values is None:  # transparent everywhere: the gate is 0, the values do not matter
        taps = Taps({p: Src(const=FALLBACK[p]) for p in PARAMS}, taps.notes, taps.alpha)
    a = taps.alpha
    gate = _math(nt, "SUBTRACT", Src(const=1.0), _math(nt, "LESS_THAN", a, Src(const=float(alpha_threshold))))
    for p in PARAMS:
        _aov(nt, p, _scale(nt, taps.values[p], gate, p == "basecolor"))
    depth = Src(socket=nt.nodes.new("ShaderNodeCameraData").outputs["View Z Depth"])
    _aov(nt, "depth", _scale(nt, depth, gate, False))
    _aov(nt, "coverage", gate)
    # what the gate does: nothing (alpha at or above the threshold everywhere), cuts every hit
    # (below it everywhere: the material is invisible to the passes), or cuts where it is below
    cut = "none" if gate.const == 1.0 else "everywhere" if gate.const == 0.0 else "where alpha < threshold"
    return {"material": mat.name, "tapped": reason is None, "fallback": reason, "notes": taps.notes, "alpha_cut": cut}


def register_aovs(view_layer) -> None:
    for name, kind in AOVS.items():
        a = view_layer.aovs.add()
        a.name, a.type = name, kind


NO_MATERIAL = "dr_no_material"


def default_material():
    """The material given to meshes that have none: a plain Principled BSDF (reported as fallback)."""
    return bpy.data.materials.get(NO_MATERIAL) or bpy.data.materials.new(NO_MATERIAL)
