"""A trial's model as it is logged to MLflow, and how to run it as an SNN again. No MLflow here.

Each finished trial logs its final ANN (``TrialResult.model``) as an MLflow PyTorch model (see
``snnconv.tracking``) with :func:`model_metadata` as the model's metadata: the conversion settings
the trial used, its operating point and its whole trial config. Given the loaded model and that
metadata, :func:`build_snn` rebuilds the trial's SNN and :func:`evaluate_snn` runs it on a data
split; on the trial's test split it gives back the logged ``acc_op``::

    model = mlflow.pytorch.load_model("models:/snnconv-demo/1")
    metadata = mlflow.models.get_model_info("models:/snnconv-demo/1").metadata
    accuracy = evaluate_snn(model, metadata)      # percent, = the run's acc_op

* rnl: the rate-coded IF network ``snnconv.convert.to_if(model, v_init=metadata["v_init"])``,
  simulated for ``t_op`` steps (``snnconv.simulate.simulate``); the accuracy is acc(``t_op``);
* qcfs: the PASCAL SNN (``snnconv.pascal.to_pascal(model)``), run spike by spike in
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
from .pascal import evaluate_pascal, to_pascal
from .simulate import simulate

#: version of the metadata layout below (bumped when a key changes meaning)
METADATA_FORMAT = 1
#: the SNN each method's model becomes: rate-coded IF neurons (rnl) or PASCAL (qcfs)
SNN_KINDS: Mapping[str, str] = {"rnl": "if", "qcfs": "pascal"}


def model_metadata(config: TrialConfig, *, t_op: float, acc_op: float, thresholds: Sequence[float],
                   levels: Sequence[int] | None, input_shape: Sequence[int], num_classes: int,
                   data: DataFacts | None = None) -> dict[str, Any]:
    """The logged model's metadata (plain YAML-safe values).

    ``snnconv_format``, ``method``, ``snn`` ("if" | "pascal"), ``t_op`` (rnl: IF time steps, an
    integer; qcfs: PASCAL T_eff), ``acc_op`` (percent, test split), ``thresholds`` (per activation
    layer: rnl the IF threshold, qcfs λ), ``input_shape`` ([C, H, W]), ``num_classes``; rnl adds
    ``v_init`` and ``t_max``; qcfs adds ``levels`` (L per layer) and ``snn_dtype``; ``dataset``
    (name, digest, split sizes) when known; ``config``: the whole trial config
    (``snnconv.config.from_dict`` rebuilds it, and with it the data splits).
    """
    if config.method not in SNN_KINDS:
        raise ValueError(f"no SNN conversion is known for method {config.method!r}")
    metadata: dict[str, Any] = {
        "snnconv_format": METADATA_FORMAT, "method": config.method, "snn": SNN_KINDS[config.method],
        "t_op": int(t_op) if config.method == "rnl" else float(t_op), "acc_op": float(acc_op),
        "thresholds": [float(value) for value in thresholds],
        "input_shape": [int(size) for size in input_shape], "num_classes": int(num_classes),
    }
    if config.method == "rnl":
        metadata.update(v_init=config.rnl.v_init, t_max=int(config.rnl.t_max))
    else:
        metadata.update(levels=[int(value) for value in levels or []], snn_dtype=config.qcfs.snn_dtype)
    if data is not None:
        metadata["dataset"] = {"name": data.name, "digest": data.digest, "sizes": dict(data.sizes)}
    metadata["config"] = config.to_dict()
    return metadata


def _method(metadata: Mapping[str, Any]) -> str:
    method = metadata.get("method")
    if method not in SNN_KINDS:
        raise ValueError(f"the model's metadata has no known method (method = {method!r}); was it logged by "
                         f"snnconv?")
    return str(method)


def build_snn(model: nn.Module, metadata: Mapping[str, Any]) -> nn.Module:
    """The trial's SNN from its logged ANN: ``to_if(model, v_init=...)`` (rnl; simulate it with
    ``snnconv.simulate.simulate(snn, loader, metadata["t_op"])``) or ``to_pascal(model)`` (qcfs;
    ``snn(images)`` gives exact logits)."""
    if _method(metadata) == "rnl":
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

    rnl: the IF network simulated for ``t_op`` steps, its accuracy after ``t_op`` steps; qcfs: the
    PASCAL SNN's spike-level accuracy in ``snn_dtype`` (exact). On the trial's test split, on the
    device the trial ran on, this is the run's ``acc_op``. ``model`` is moved to ``device`` and put
    in eval mode; the SNN is built from a copy of it.
    """
    method = _method(metadata)
    loader = load_test_split(metadata, device) if loader is None else loader
    model = model.to(device).eval()
    if method == "rnl":
        t_op = metadata["t_op"]
        if not isinstance(t_op, int) or t_op < 1:
            raise ValueError(f"the model's metadata has no operating step t_op (got {t_op!r})")
        return float(simulate(build_snn(model, metadata), loader, t_op, device).acc_curve[t_op - 1])
    dtype = torch.float64 if metadata.get("snn_dtype", "float64") == "float64" else torch.float32
    return float(evaluate_pascal(model, loader, device, dtype).accuracy)
