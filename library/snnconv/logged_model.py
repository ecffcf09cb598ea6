"""A trial's model as it is logged to MLflow, and how to run it as an SNN again. No MLflow here.

Each finished trial logs its final ANN (``TrialResult.model``) as an MLflow PyTorch model (see
``snnconv.tracking``) with :func:`model_metadata` as the model's metadata: the conversion settings
the trial used, its operating point and its whole trial config. Given the loaded model and that
metadata, :func:`build_snn` rebuilds the trial's SNN and :func:`evaluate_snn` runs it on a data
split; on the trial's test split it gives back the logged ``acc_op``::

    model = mlflow.pytorch.load_model("models:/snnconv-demo/1")
    metadata = mlflow.models.get_model_info("models:/snnconv-demo/1").metadata
    accuracy = evaluate_snn(model, metadata)      # percent, = the run's acc_op

* rnl, datanorm (``snn: if``): the rate-coded IF network ``snnconv.convert.to_if(model, v_init=metadata["v_init"])``,
  simulated for ``t_op`` steps (``snnconv.simulate.simulate``); the accuracy is acc(``t_op``);
* qcfs (``snn: pascal``): the PASCAL SNN (``snnconv.pascal.to_pascal(model)``), run spike by spike in
  ``snn_dtype`` by ``snnconv.pascal.evaluate_pascal``; exact, so no number of steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .config import TrialConfig, from_dict
from .convert import to_if
from .data import DataFacts, load_data
from .method_registry import MethodError, get_method
from .pascal import evaluate_pascal, to_pascal
from .simulate import simulate

#: version of the metadata layout below (bumped when a key changes meaning)
METADATA_FORMAT = 1


def snn_kind(method: str) -> str:
    """The SNN ``method``'s model becomes (its registry entry's ``snn``): "if" (rate-coded IF neurons: rnl,
    datanorm) or "pascal" (qcfs); ValueError for a method that is not registered."""
    try:
        return get_method(method).snn
    except MethodError:
        raise ValueError(f"no SNN conversion is known for method {method!r}") from None


def model_metadata(config: TrialConfig, *, t_op: float, acc_op: float, thresholds: Sequence[float],
                   levels: Sequence[int] | None, input_shape: Sequence[int], num_classes: int,
                   data: DataFacts | None = None) -> dict[str, Any]:
    """The logged model's metadata (plain YAML-safe values).

    ``snnconv_format``, ``method``, ``snn`` ("if" | "pascal"), ``t_op`` (an IF method: time steps, an
    integer; qcfs: PASCAL T_eff), ``acc_op`` (percent, test split), ``thresholds`` (per activation
    layer: the IF threshold, qcfs λ), ``input_shape`` ([C, H, W]), ``num_classes``; an IF method (rnl,
    datanorm) adds ``v_init`` and ``t_max``; qcfs adds ``levels`` (L per layer) and ``snn_dtype``; ``dataset``
    (name, digest, split sizes) when known; ``config``: the whole trial config
    (``snnconv.config.from_dict`` rebuilds it, and with it the data splits).
    """
    kind = snn_kind(config.method)
    settings = config.settings()
    metadata: dict[str, Any] = {
        "snnconv_format": METADATA_FORMAT, "method": config.method, "snn": kind,
        "t_op": int(t_op) if kind == "if" else float(t_op), "acc_op": float(acc_op),
        "thresholds": [float(value) for value in thresholds],
        "input_shape": [int(size) for size in input_shape], "num_classes": int(num_classes),
    }
    if kind == "if":
        metadata.update(v_init=getattr(settings, "v_init", "zero"), t_max=int(getattr(settings, "t_max", t_op)))
    else:
        metadata.update(levels=[int(value) for value in levels or []], snn_dtype=settings.snn_dtype)
    if data is not None:
        metadata["dataset"] = {"name": data.name, "digest": data.digest, "sizes": dict(data.sizes)}
    metadata["config"] = config.to_dict()
    return metadata


def _snn(metadata: Mapping[str, Any]) -> str:
    """The metadata's SNN kind ("if" or "pascal"), refusing metadata snnconv did not write."""
    kind = metadata.get("snn")
    if kind not in ("if", "pascal") or not isinstance(metadata.get("method"), str):
        raise ValueError(f"the model's metadata has no known method (method = {metadata.get('method')!r}, "
                         f"snn = {kind!r}); was it logged by snnconv?")
    return str(kind)


def build_snn(model: nn.Module, metadata: Mapping[str, Any]) -> nn.Module:
    """The trial's SNN from its logged ANN: ``to_if(model, v_init=...)`` (IF methods; simulate it with
    ``snnconv.simulate.simulate(snn, loader, metadata["t_op"])``) or ``to_pascal(model)`` (qcfs;
    ``snn(images)`` gives exact logits)."""
    if _snn(metadata) == "if":
        return to_if(model, v_init=str(metadata["v_init"]))
    return to_pascal(model)


def load_test_split(metadata: Mapping[str, Any], device: torch.device | str = "cpu") -> Iterable:
    """The trial's test split, loaded again from the trial config in ``metadata`` (same split seed
    and batch size; a folder data set must be where ``data.data_dir`` says)."""
    config = from_dict(metadata["config"])
    return load_data(config.data, device).test


def evaluate_snn(model: nn.Module, metadata: Mapping[str, Any], loader: Iterable | None = None,
                 device: torch.device | str = "cpu") -> float:
    """Accuracy (percent) of the trial's SNN at its operating point on ``loader`` (default: the
    trial's test split, :func:`load_test_split`), on ``device``.

    IF methods (rnl, datanorm): the IF network simulated for ``t_op`` steps, its accuracy after ``t_op``
    steps; qcfs: the PASCAL SNN's spike-level accuracy in ``snn_dtype`` (exact). On the trial's test split, on the
    device the trial ran on, this is the run's ``acc_op``. ``model`` is moved to ``device`` and put
    in eval mode; the SNN is built from a copy of it.
    """
    kind = _snn(metadata)
    loader = load_test_split(metadata, device) if loader is None else loader
    model = model.to(device).eval()
    if kind == "if":
        t_op = metadata["t_op"]
        if not isinstance(t_op, int) or t_op < 1:
            raise ValueError(f"the model's metadata has no operating step t_op (got {t_op!r})")
        return float(simulate(build_snn(model, metadata), loader, t_op, device).acc_curve[t_op - 1])
    dtype = torch.float64 if metadata.get("snn_dtype", "float64") == "float64" else torch.float32
    return float(evaluate_pascal(model, loader, device, dtype).accuracy)
