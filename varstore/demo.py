"""``varstore demo``: a small real training loop whose weights are varstore variables.

A 2-layer MLP (tanh hidden layer) learns a teacher network's outputs on synthetic data,
by full-batch Adam: the forward pass, the loss and the hand-written gradients are array
math on the store's device (CuPy on cuda, NumPy on the CPU), and each step is one fused
``vs.optimizers.Adam`` update of the four variables (its slots live in the same store).
At the end the store (weights and optimizer state) is saved to a safetensors checkpoint,
reloaded into a fresh store, and the reloaded model's loss is checked to be the same.

>>> result = run(device="cpu", steps=50, out=lambda line: None)
>>> result["loss_ratio"] > 1
True
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from . import initializers
from .backends import for_device
from .errors import ArgumentTypeError
from .memory import format_bytes
from .optimizers import Adam
from .store import VariableStore

INPUTS, HIDDEN, OUTPUTS, SAMPLES = 32, 64, 4, 4096
LEARNING_RATE = 0.01


def build_model(store: VariableStore, seed: int) -> dict:
    """The MLP's four variables, Keras-style paths: ``dense_1/kernel`` ... ``dense_2/bias``."""
    model = {}
    for layer, (fan_in, fan_out) in enumerate(((INPUTS, HIDDEN), (HIDDEN, OUTPUTS)), start=1):
        with store.name_scope(f"dense_{layer}"):
            model[f"w{layer}"] = store.variable(initializers.GlorotUniform(seed=seed + layer), shape=(fan_in, fan_out),
                                                dtype="float32", name="kernel")
            model[f"b{layer}"] = store.variable("zeros", shape=(fan_out,), dtype="float32", name="bias")
    return model


def synthetic_data(xp, seed: int):
    """Inputs and the targets a random teacher MLP (wider, same form) gives them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, INPUTS), dtype=np.float32)
    teacher_1 = rng.standard_normal((INPUTS, 2 * HIDDEN), dtype=np.float32) / np.sqrt(INPUTS)
    teacher_2 = rng.standard_normal((2 * HIDDEN, OUTPUTS), dtype=np.float32) / np.sqrt(2 * HIDDEN)
    y = np.tanh(x @ teacher_1) @ teacher_2
    return xp.asarray(x), xp.asarray(y.astype(np.float32))


def forward(xp, model: dict, x):
    hidden = xp.tanh(x @ model["w1"].value + model["b1"].value)
    return hidden, hidden @ model["w2"].value + model["b2"].value


def loss_of(xp, model: dict, x, y) -> float:
    return float(xp.mean((forward(xp, model, x)[1] - y) ** 2))


def train_step(xp, model: dict, x, y, optimizer) -> float:
    """One full-batch step of mean squared error; returns the loss before the update."""
    hidden, prediction = forward(xp, model, x)
    error = prediction - y
    loss = float(xp.mean(error**2))
    d_prediction = (2.0 / error.size) * error
    d_hidden = (d_prediction @ model["w2"].value.T) * (1.0 - hidden**2)
    gradients = {
        "w2": hidden.T @ d_prediction,
        "b2": d_prediction.sum(axis=0),
        "w1": x.T @ d_hidden,
        "b1": d_hidden.sum(axis=0),
    }
    optimizer.apply(list(gradients.values()), [model[name] for name in gradients])
    return loss


def run(device=None, steps: int = 300, checkpoint: str | None = None, seed: int = 0, out=print) -> dict:
    """Train, save, reload; print the loss as it falls and the store's memory.

    Returns:
        dict with ``first_loss``, ``final_loss``, ``loss_ratio`` (first / final),
        ``reloaded_loss``, ``seconds`` and ``memory_info``.

    Raises:
        ValueError: ``steps`` is not a positive integer, or ``device`` is not a device here.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise (ValueError if type(steps) is int else ArgumentTypeError)(
            f"Invalid value for argument `steps`. Expected a positive integer. Received: steps={steps!r}")
    backend, device = for_device(device)
    with backend.on_device(device):  # (the demo's own array operations run on the store's device)
        return _run(backend, device, steps, checkpoint, seed, out)


def _run(backend, device: str, steps: int, checkpoint: str | None, seed: int, out) -> dict:
    xp = backend.xp
    started = time.perf_counter()
    store = VariableStore(device=device)
    model = build_model(store, seed)
    optimizer = Adam(learning_rate=LEARNING_RATE)
    optimizer.build(list(model.values()))
    x, y = synthetic_data(xp, seed)
    out(f"varstore demo: a {INPUTS}-{HIDDEN}-{OUTPUTS} MLP on {SAMPLES} synthetic samples, "
        f"{steps} Adam steps, on {device} ({backend.name} backend)")
    for path, variable in store.items():
        out(f"  {path:16s} {str(variable.shape):10s} {variable.dtype}")
    first = None
    report_every = max(1, steps // 10)
    for step in range(steps):
        loss = train_step(xp, model, x, y, optimizer)
        first = loss if first is None else first
        if step % report_every == 0:
            out(f"  step {step:4d}  loss {loss:.6f}")
    final = loss_of(xp, model, x, y)
    out(f"  step {steps:4d}  loss {final:.6f}")
    out(f"loss fell from {first:.6f} to {final:.6f} ({first / final:.1f}x)")

    with tempfile.TemporaryDirectory(prefix="varstore-demo-") as folder:
        path = checkpoint or os.path.join(folder, "mlp.safetensors")
        store.save(path)
        restored_store = VariableStore(device=device)
        restored = build_model(restored_store, seed + 100)  # other initial values, then loaded
        Adam(learning_rate=LEARNING_RATE).build(list(restored.values()))  # (its slots: the file holds them)
        restored_store.load(path)
        reloaded = loss_of(xp, restored, x, y)
        size = os.path.getsize(path)
    same = "the same" if reloaded == final else "DIFFERENT"
    out(f"checkpoint: {format_bytes(size)} saved{' to ' + checkpoint if checkpoint else ''}, reloaded into a "
        f"new store: loss {reloaded:.6f} ({same})")
    info = store.memory_info()
    out("store.memory_info():")
    for key, value in info.items():
        out(f"  {key:20s} {format_bytes(value) if key.endswith('_bytes') and value is not None else value}")
    seconds = time.perf_counter() - started
    out(f"done in {seconds:.1f} s")
    if reloaded != final:
        raise RuntimeError(f"The reloaded model's loss {reloaded!r} differs from the trained model's {final!r}.")
    return {"first_loss": first, "final_loss": final, "loss_ratio": first / final, "reloaded_loss": reloaded,
            "seconds": seconds, "memory_info": info}
