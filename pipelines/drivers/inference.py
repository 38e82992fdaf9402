"""RunInference's pieces: the model handler that loads the proxy or the user's model in
each worker, and the inference functions that turn one record batch's encoded rows into
the representation (and, for the proxy, out-of-fold class probabilities)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

from poisonscan.pipelines.represent.proxy import (
    ProxyEnsemble,
    apply_proxy,
    import_class,
    layer_output,
)
from poisonscan.pipelines.scan.plan import ScanPlan


def model_handler(plan: ScanPlan):
    """The PyTorch model handler for the proxy (state dict, loaded weights-only) or the
    user's model (TorchScript, or a state dict and its class)."""
    device = "GPU" if torch.cuda.is_available() else "CPU"
    rep = plan.representer
    common = dict(device=device, max_batch_size=1, min_batch_size=1)
    if rep.proxy is not None:
        return PytorchModelHandlerKeyedTensor(
            state_dict_path=plan.weights_path,
            model_class=ProxyEnsemble,
            model_params={"kind": rep.proxy.kind, "params": rep.proxy.params, "folds": rep.proxy.folds,
                          "linear": rep.proxy.linear},
            inference_fn=functools.partial(ensemble_inference, threads=rep.threads),
            load_model_args={"weights_only": True},
            **common,
        )
    user = rep.user_model
    fn = functools.partial(user_inference, layer=user.layer, threads=rep.threads)
    if user.model_class is None:
        return PytorchModelHandlerKeyedTensor(torch_script_model_path=user.path, inference_fn=fn, **common)
    return PytorchModelHandlerKeyedTensor(
        state_dict_path=user.path,
        model_class=import_class(user.model_class),
        model_params=dict(user.model_params),
        inference_fn=fn,
        load_model_args={"weights_only": True},
        **common,
    )


def ensemble_inference(batch, model, device, inference_args=None, model_id=None, threads=1):
    """RunInference's inference function: each example is one record batch's encoded
    rows (a dict of tensors with a ``fold`` column); torch held to ``threads`` threads."""
    out = []
    for example in batch:
        inputs = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in example.items() if k != "fold"}
        fold = example["fold"]
        fold = fold.numpy() if isinstance(fold, torch.Tensor) else fold
        rep, probs = apply_proxy(model, inputs, fold, threads=threads)
        out.append(PredictionResult(example, {"representation": rep, "probabilities": probs}, model_id))
    return out


def user_inference(batch, model, device, inference_args=None, model_id=None, layer=None, threads=1):
    """RunInference's inference function for the user's model: the tapped layer's
    activations, flattened, per example (one record batch's rows); torch held to
    ``threads`` threads."""
    out = []
    for example in batch:
        x = example["x"]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        h = layer_output(model, x.to(device), layer, threads).reshape(len(x), -1).cpu().numpy().astype(np.float32)
        out.append(PredictionResult(example, {"representation": h, "probabilities": None}, model_id))
    return out
