"""A trial's rate-coded IF network as a NIR graph (:func:`to_nir`), written to and read from a NIR file
(:func:`write_nir`, :func:`read_nir`); what each node holds is in the :mod:`snnconv.nir` docstring.
No MLflow here. Requires the ``nir`` extra (:data:`INSTALL_HINT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from .. import graph as dataflow
from ..convert import to_if
from ..neurons import IFNeuron, StaticInput, reset_state

#: how to install what this module needs
INSTALL_HINT = "pip install -e '.[nir]'  (nir, nirtorch and snntorch)"
#: version of the graph-level metadata below
NIR_FORMAT = 1
#: the IF semantics NIR's IF node cannot hold, written into each IF node's metadata
IF_RESET = "subtract"
IF_FIRES_AT = "v >= v_threshold"
#: layers that leave the values unchanged in a rate-coded network (dropped from the graph)
_PASS_THROUGH = (nn.Dropout, nn.Identity)


class NIRUnavailable(ImportError):
    """The ``nir`` extra is not installed; the message says how to install it."""


def require(module_name: str) -> Any:
    """Import ``module_name`` (``nir``, ``nirtorch`` or ``snntorch``) or raise :class:`NIRUnavailable`
    with :data:`INSTALL_HINT`."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise NIRUnavailable(f"NIR export needs the {module_name!r} package: {INSTALL_HINT}") from error


def node_name(layer_name: str) -> str:
    """The NIR node name of a layer of the IF network (``features.3`` -> ``features_3``)."""
    return layer_name.replace(".", "_")


def if_network(model: nn.Module, metadata: Mapping[str, Any]) -> nn.Module:
    """The rate-coded IF network NIR export writes: ``to_if(model, v_init)`` with batch norm folded,
    ``v_init`` from the metadata for rnl and ``"half"`` (v(0) = λ/2) for qcfs."""
    method = metadata.get("method")
    if method == "rnl":
        v_init = str(metadata["v_init"])
    elif method == "qcfs":
        v_init = "half"
    else:
        raise ValueError(f"no NIR export is known for method {method!r}")
    return to_if(model, v_init=v_init, fold_bn=True)


def default_steps(metadata: Mapping[str, Any]) -> int:
    """Steps to run the exported network for: rnl its ``t_max`` (acc(t) up to it is the trial's curve);
    qcfs the ``t_max`` of its IF comparison (``config.qcfs.t_max``)."""
    if metadata.get("method") == "rnl":
        return int(metadata["t_max"])
    return int(metadata["config"]["qcfs"]["t_max"])


# ---------------------------------------------------------------------------------------------
# export


def _chain(snn: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``snn`` in dataflow order, when its forward is one chain (each module reads the
    previous one's output only). A residual addition or any other fan-in or fan-out is refused."""
    graph = dataflow.trace(snn)
    if graph is None:
        raise ValueError("NIR export needs a model whose forward traces with torch.fx")
    chain: list[tuple[str, nn.Module]] = []
    previous: fx.Node | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            break
        if node.op != "call_module" or node.args[0] is not previous or len(previous.users) != 1:
            raise ValueError(f"NIR export handles feed-forward chains (small CNN, VGG); this model's forward "
                             f"has {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)}), "
                             "which is not one module reading the previous one (e.g. a residual addition)")
        chain.append((str(node.target), snn.get_submodule(str(node.target))))
        previous = node
    return chain


def _shapes(snn: nn.Module, chain: list[tuple[str, nn.Module]], input_shape: tuple[int, ...]
            ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input shape, output shape)`` per chain module, without the batch dimension (one step on
    zeros; the IF state is reset afterwards)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = [module.register_forward_hook(
        lambda m, i, o, name=name: shapes.__setitem__(name, (tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
        for name, module in chain]
    try:
        with torch.inference_mode():
            reset_state(snn)
            snn(torch.zeros((1, *input_shape), device=next(snn.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        reset_state(snn)
    return shapes


def _pool_node(nir_module: Any, module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """An ``AvgPool2d`` node for nn.AvgPool2d, or for an nn.AdaptiveAvgPool2d whose input size is a
    multiple of its output size (None when it is the identity)."""
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or (module.padding not in (0, (0, 0)) and not module.count_include_pad):
            raise ValueError("NIR export handles average pools without ceil_mode and with count_include_pad")
        def pair(value: int | tuple[int, int]) -> np.ndarray:
            return np.array(value if isinstance(value, tuple) else (value, value))

        stride = module.stride if module.stride is not None else module.kernel_size
        return nir_module.AvgPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride),
                                    padding=pair(module.padding))
    (height, width), (out_height, out_width) = in_shape[-2:], out_shape[-2:]
    if (height, width) == (out_height, out_width):
        return None
    if height % out_height or width % out_width:
        raise ValueError(f"NIR export: adaptive average pool from {height}x{width} to {out_height}x{out_width} "
                         "is not a fixed pool")
    kernel = np.array((height // out_height, width // out_width))
    return nir_module.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.array((0, 0)))


def to_nir(model: nn.Module, metadata: Mapping[str, Any]) -> Any:
    """The trial's rate-coded IF network (:func:`if_network`) as a ``nir.NIRGraph``.

    ``model`` is the trial's ANN (the logged model) and ``metadata`` its model metadata
    (:func:`snnconv.logged_model.model_metadata`: method, v_init, input_shape, num_classes, ...). Node
    names are the layer names with ``.`` replaced by ``_`` (:func:`node_name`); see the :mod:`snnconv.nir`
    docstring for what each node holds. ValueError for a model that is not a chain of supported layers
    (ResNet's residual additions are refused).
    """
    nir = require("nir")
    snn = if_network(model.eval(), metadata)
    input_shape = tuple(int(size) for size in metadata["input_shape"])
    chain = _chain(snn)
    shapes = _shapes(snn, chain, input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    previous, amplitude = "input", 1.0

    def add(name: str, node: Any) -> None:
        nonlocal previous
        nodes[name] = node
        edges.append((previous, name))
        previous = name

    for name, module in chain:
        in_shape, out_shape = shapes[name]
        if isinstance(module, StaticInput):
            module = module.layer
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().double().cpu().numpy() * amplitude
            bias = (module.bias.detach().double().cpu().numpy() if module.bias is not None
                    else np.zeros(weight.shape[0]))
            weight, bias = weight.astype(np.float32), bias.astype(np.float32)
            if isinstance(module, nn.Conv2d):
                if not isinstance(module.padding, tuple):
                    raise ValueError(f"NIR export: layer {name!r} uses padding={module.padding!r}; give it as numbers")
                add(node_name(name), nir.Conv2d(
                    input_shape=np.array(in_shape[-2:]), weight=weight, stride=np.array(module.stride),
                    padding=np.array(module.padding), dilation=np.array(module.dilation), groups=module.groups,
                    bias=bias))
            else:
                add(node_name(name), nir.Affine(weight=weight, bias=bias))
            amplitude = 1.0
        elif isinstance(module, IFNeuron):
            ones = np.ones(out_shape, dtype=np.float32)
            add(node_name(name), nir.IF(
                r=ones, v_threshold=ones * np.float32(module.threshold), v_reset=np.zeros_like(ones),
                metadata={"snnconv_layer": name, "reset": IF_RESET, "v_init": module.v_init,
                          "fires_at": IF_FIRES_AT, "spike_amplitude": module.amplitude}))
            amplitude = module.amplitude
        elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            pool = _pool_node(nir, module, in_shape, out_shape)
            if pool is not None:
                add(node_name(name), pool)
        elif isinstance(module, nn.Flatten):
            start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            add(node_name(name), nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end))
        elif isinstance(module, _PASS_THROUGH):
            continue
        else:
            raise ValueError(f"NIR export: layer {name!r} ({type(module).__name__}) has no NIR node here "
                             "(a batch norm is folded only when it directly follows a conv or linear layer)")
    if amplitude != 1.0:
        raise ValueError("NIR export: the network ends in a spiking layer; the last layer must be a weight layer")
    nodes["output"] = nir.Output(output_type=np.array([int(metadata["num_classes"])]))
    edges.append((previous, "output"))
    graph_metadata = {"snnconv_format": NIR_FORMAT, "method": str(metadata["method"]),
                      "readout": "argmax of the output summed over steps",
                      "steps": default_steps(metadata)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_metadata)


def write_nir(graph: Any, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    require("nir").write(str(path), graph)
    return path


def read_nir(path: str | Path) -> Any:
    """The graph in the NIR file at ``path`` (``nir.read``)."""
    return require("nir").read(str(path))
