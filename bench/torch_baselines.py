"""PyTorch baselines, when PyTorch imports: on the GPU for the cuda backend, else the CPU.

Each method returns ``(label, fn)``, or ``None`` where PyTorch has no such operation.
"""

from __future__ import annotations

import numpy as np


def load(backend_name: str, device: str):
    """A ``TorchBaselines`` for this backend's device, or None without a working PyTorch."""
    try:
        import torch
    except Exception:  # not installed, or a broken CUDA library (OSError)
        return None
    if backend_name == "cuda" and not torch.cuda.is_available():
        return None
    return TorchBaselines(torch, device if backend_name == "cuda" else "cpu")


class TorchBaselines:
    def __init__(self, torch, device: str):
        self.torch = torch
        self.device = device
        self.version = torch.__version__

    def tensor(self, host: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(host)).to(self.device)

    def empty(self, shape):
        """Written once, so no baseline pays first-touch page faults."""
        return self.torch.ones(shape, dtype=self.torch.float32, device=self.device)

    def astype(self, host: np.ndarray, src: str, dst: str):
        torch = self.torch
        source = getattr(torch, src, None)
        target = getattr(torch, dst, None)
        if source is None or target is None:
            return None
        # From host bits: NumPy cannot hand PyTorch a bfloat16 or float8 array.
        words = {1: np.uint8, 2: np.int16, 4: np.int32}[host.dtype.itemsize]
        x = torch.from_numpy(np.ascontiguousarray(host).view(words)).to(self.device).view(source)
        return "torch .to()", lambda: x.to(target)

    def add_(self, dst_hosts: list, src, dtype: str):
        """``("torch add_", [fn, ...])``: ``dst.add_(src)`` on ``dtype`` tensors made from
        the host arrays ``dst_hosts``, one operand shared by all (``src``: a host array of
        the same dtype, or a Python scalar)."""
        torch = self.torch
        target = getattr(torch, dtype, None)
        if target is None:
            return None
        words = {1: np.uint8, 2: np.int16, 4: np.int32}[dst_hosts[0].dtype.itemsize]

        def tensor(host):
            return torch.from_numpy(np.ascontiguousarray(host).view(words)).to(self.device).view(target)

        operand = tensor(src) if isinstance(src, np.ndarray) else src
        tensors = [tensor(h) for h in dst_hosts]
        return "torch add_", [lambda dst=dst: dst.add_(operand) for dst in tensors]

    def initializer(self, name: str, out, scale_mode_distribution=None):
        """PyTorch's in-place init functions, for the initializers PyTorch has."""
        init = self.torch.nn.init
        table = {
            "zeros": ("Tensor.zero_", lambda: out.zero_()),
            "ones": ("Tensor.fill_(1)", lambda: out.fill_(1.0)),
            "constant": ("Tensor.fill_", lambda: out.fill_(0.5)),
            "random_uniform": ("Tensor.uniform_", lambda: out.uniform_(-0.05, 0.05)),
            "random_normal": ("Tensor.normal_", lambda: out.normal_(0.0, 0.05)),
            "truncated_normal": ("nn.init.trunc_normal_", lambda: init.trunc_normal_(out, 0.0, 0.05, -0.1, 0.1)),
            "glorot_uniform": ("nn.init.xavier_uniform_", lambda: init.xavier_uniform_(out)),
            "he_uniform": ("nn.init.kaiming_uniform_", lambda: init.kaiming_uniform_(out, nonlinearity="relu")),
            "orthogonal": ("nn.init.orthogonal_", lambda: init.orthogonal_(out)),
            "identity": ("nn.init.eye_", lambda: init.eye_(out)),
        }
        return table.get(name)

    def fill_value(self, out, value):
        return "Tensor.fill_", lambda: out.fill_(value)

    def copy_from_host(self, out, host: np.ndarray):
        source = self.torch.from_numpy(host)
        return "Tensor.copy_(from NumPy)", lambda: out.copy_(source)

    def copy(self, out, src):
        return "Tensor.copy_", lambda: out.copy_(src)

    def setitem(self, out, key, value):
        return "torch setitem", lambda: out.__setitem__(key, value)

    def getitem_copy(self, tensor, key):
        return "torch t[key].contiguous()", lambda: tensor[key].contiguous()

    def zeros(self, shape, holder: list):
        torch = self.torch

        def make():
            holder[:] = [torch.zeros(shape, dtype=torch.float32, device=self.device)]

        return "torch.zeros", make
