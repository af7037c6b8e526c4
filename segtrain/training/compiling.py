"""`segtrain fit --compile`: torch.compile of the model for training and validation, or one line why not.

torch.compile needs a platform Dynamo supports and a working code generator for the device: a C++
compiler on CPU (Inductor builds C++ kernels), Triton on CUDA. Rather than guess from the platform,
`require_compile` compiles and runs a two-operation function on the device first; when that fails the
run stops before anything is written (CompileError, exit 2), naming the reason. The checkpoints are
written from the bare model, so their keys carry no `_orig_mod.` prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from segtrain.common.errors import InputError


class CompileError(InputError):
    """--compile asked for on a machine where torch.compile cannot work."""


def require_compile(device: torch.device) -> None:
    """Raise CompileError unless torch.compile can build and run code for `device` here."""
    import torch._dynamo

    how = "run without --compile"
    if not torch._dynamo.is_dynamo_supported():
        raise CompileError(f"--compile: torch.compile is not supported on this platform "
                           f"(torch {torch.__version__}); {how}")
    try:
        probe = torch.compile(_probe, dynamic=False)
        ok = bool(probe(torch.ones(8, device=device)).eq(3).all())
    except Exception as e:  # Inductor raises many kinds (no compiler, no Triton, a failed build)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[0] if lines else type(e).__name__  # the cause; the lines after it are hints
        raise CompileError(f"--compile: torch.compile cannot build code for {device} here "
                           f"({reason[:300]}); {how}") from None
    finally:
        torch._dynamo.reset()
    if not ok:
        raise CompileError(f"--compile: torch.compile gave wrong results on {device} here; {how}")


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x) * 2 + 1


def compiled(module: nn.Module) -> nn.Module:
    """`module` compiled (the default Inductor backend); its own state dict keeps the plain keys."""
    return torch.compile(module)
