"""Encoder weights: "imagenet" (the libraries' own files), "none" (random init) or a local file.

"imagenet" resolves to the file the library itself would use (torchvision's weights enum for VGG,
segmentation_models_pytorch's Hugging Face repos for smp encoders) and takes it from the local
cache when it is there. When it is not, the download host must answer within a few seconds;
otherwise building fails at once with one line naming `--encoder-weights none` or a local file,
rather than sitting through the libraries' network retries (smp's take over 20 s offline).

A local file is a state dict (``.pth``/``.pt`` loaded with ``weights_only=True``, or
``.safetensors``) for the encoder alone or for the whole classification network it came from;
each builder passes an ``adapt`` function that maps it to the encoder's keys. Loading is strict.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from segtrain.common.errors import InputError
from segtrain.common.files import UnsafeLoadError, safe_torch_load

NONE = "none"
IMAGENET = "imagenet"
REACH_TIMEOUT_S = 3.0
OFFLINE_HINT = "use --encoder-weights none, or --encoder-weights PATH to a local encoder state dict"

StateDict = Mapping[str, torch.Tensor]


class ModelError(InputError):
    """A model that cannot be built as asked (unknown name, bad encoder, unusable weights); one line."""


def host_reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or the configured HTTPS proxy) opens within `timeout`.

    Runs in a thread so that a slow DNS lookup is bounded too, not only the connect.
    """
    proxy = urllib.request.getproxies().get(urlparse(url).scheme or "https")
    target = urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(ok)


def require_download(url: str, what: str) -> None:
    """Fail fast, in one line, when `url` cannot be reached to download `what`."""
    if not host_reachable(url):
        host = urlparse(url).hostname
        raise ModelError(f"ImageNet weights for {what} are not cached and {host} is unreachable "
                         f"(offline?); {OFFLINE_HINT}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a local file; refuses pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "encoder weights file not found"
        raise ModelError(f"{path}: {what} (or pass --encoder-weights imagenet|none)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = safe_torch_load(path, what="weights file", plain="state dict")
    except UnsafeLoadError as e:
        raise ModelError(f"{path}: {e}") from e
    except Exception as e:  # safetensors raises its own types for bytes that are not a safetensors file
        raise ModelError(f"{path}: not a readable weights file ({type(e).__name__})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return sd


def load_strict(module: nn.Module, state_dict: StateDict, source: str, what: str) -> None:
    """load_state_dict(strict=True), with a one-line summary of what does not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                if items]
    if problems:
        raise ModelError(f"{source}: weights do not fit the {what} encoder: {'; '.join(problems)}")
    module.load_state_dict(dict(state_dict), strict=True)


def load_encoder_weights(encoder: nn.Module, weights: str | Path | None, what: str,
                         imagenet: Callable[[], StateDict], adapt: Callable[[StateDict], StateDict]) -> None:
    """Fill `encoder` according to `weights` ("imagenet", "none"/None or a file path)."""
    if weights is None or str(weights).lower() == NONE:
        return
    if str(weights).lower() == IMAGENET:
        load_strict(encoder, adapt(imagenet()), f"ImageNet weights for {what}", what)
        return
    load_strict(encoder, adapt(read_state_dict(weights)), str(weights), what)


def torchvision_imagenet(weights_enum) -> Callable[[], StateDict]:
    """Loader for a torchvision weights enum entry, from torch hub's cache when the file is there."""

    def load() -> StateDict:
        filename = os.path.basename(urlparse(weights_enum.url).path)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if not cached.is_file():
            require_download(weights_enum.url, str(weights_enum))
        return weights_enum.get_state_dict(progress=False, check_hash=True)

    return load
