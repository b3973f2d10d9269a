"""Which descend optimizer stands in for which torch.optim class, and where their algorithms coincide.

The one place the contract tests (tests/test_contract.py, tests/test_model_changes.py) take their
optimizers from: a class added later (NAdam, RAdam, ...) joins every contract test with one ``Pair`` line.

The hyperparameter combinations are torch's own: the ``optim_inputs_func`` of the class's ``OptimizerInfo``
in ``torch.testing._internal.common_optimizers`` (shipped in the torch wheel), the inputs torch's
``test/test_optim.py`` runs.  ``excluded`` names the inputs (by their ``desc``) where descend's algorithm
differs from torch's on purpose, with the reason; ``excluded_errors`` the same for torch's error inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import descend
import descend.backends.cpu

# torch's test inputs import expecttest (a test-only dependency of torch); without it the contract tests skip
common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers", reason="torch's test helpers need `expecttest` (pip install expecttest)"
)

# torch accepts these, descend deliberately differs (each applies to every pair that has the error input)
DESCEND_ACCEPTS = {
    "lr as a Tensor is not supported for capturable=False and foreach=True":
        "descend takes a 1-element tensor lr on every path (it reads the number once per step)",
    "betas must be either both floats or both Tensors":
        "descend reads 1-element tensor betas as numbers, mixed or not",
    r"betas\[0\] as a Tensor is not supported":
        "descend reads 1-element tensor betas as numbers on every path",
}


@dataclass(frozen=True)
class Pair:
    """``ours`` stands in for ``theirs``; ``family`` groups classes whose checkpoints load into each other."""

    ours: type
    theirs: type
    family: str
    excluded: dict[str, str] = field(default_factory=dict)  # optim_db input desc -> why it does not coincide
    excluded_errors: dict[str, str] = field(default_factory=lambda: dict(DESCEND_ACCEPTS))
    sparse_gradients: bool = False  # both classes take sparse gradients only (SparseAdam): the tests send them
    matrices_only: bool = False  # the class takes 2-D parameters only (Muon): the tests train two matrices
    tensor_lr_is_float32: bool = False  # torch computes its scalars from a tensor lr in float32 (Muon): a tensor
    # lr then gives torch's numbers for that tensor lr, not those of the same float

    @property
    def name(self) -> str:
        return self.ours.__name__

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The parameters the contract tests train: a weight and a bias (two matrices where only those go)."""
        return ((5, 4), (3, 6)) if self.matrices_only else ((5, 4), (4,))

    def info(self):
        return next(info for info in common_optimizers.optim_db if info.optim_cls is self.theirs)

    def inputs(self) -> list[tuple[str, dict[str, Any]]]:
        """torch's hyperparameter combinations for this class on the CPU, less the excluded ones."""
        return [(i.desc, dict(i.kwargs)) for i in self.info().optim_inputs_func(device="cpu", dtype=torch.float32)
                if i.desc not in self.excluded]

    def error_inputs(self):
        excluded = self.excluded_errors
        return [e for e in self.info().optim_error_inputs_func(device="cpu", dtype=torch.float32)
                if not any(key in e.error_regex or key.replace("\\", "") in e.error_regex for key in excluded)]


PAIRS = [
    Pair(descend.SGD, torch.optim.SGD, "SGD", excluded={
        "dampening": "descend's momentum buffer starts at 0, so dampening applies from the first step (the exact "
                     "EMA); torch.optim.SGD starts the buffer at the first gradient, undampened"}),
    Pair(descend.Adagrad, torch.optim.Adagrad, "Adagrad"),
    Pair(descend.RMSprop, torch.optim.RMSprop, "RMSprop"),
    Pair(descend.Adadelta, torch.optim.Adadelta, "Adadelta"),
    Pair(descend.Adam, torch.optim.Adam, "Adam"),
    Pair(descend.AdamW, torch.optim.AdamW, "Adam"),  # torch.optim.AdamW is Adam(decoupled_weight_decay=True)
    Pair(descend.NAdam, torch.optim.NAdam, "NAdam"),
    Pair(descend.RAdam, torch.optim.RAdam, "RAdam"),
    Pair(descend.Adamax, torch.optim.Adamax, "Adamax"),
    Pair(descend.ASGD, torch.optim.ASGD, "ASGD"),
    Pair(descend.Rprop, torch.optim.Rprop, "Rprop"),
    Pair(descend.SparseAdam, torch.optim.SparseAdam, "SparseAdam", sparse_gradients=True),
    Pair(descend.Muon, torch.optim.Muon, "Muon", matrices_only=True, tensor_lr_is_float32=True),
    # descend.Adafactor is Hugging Face's algorithm, not torch.optim.Adafactor's (which clamps V̂ at ε₁² instead of
    # adding ε₁ to G², and has no beta1): no pair; tests/test_faults.py checks it against transformers.
]


SPARSE_ONLY = tuple(cls for pair in PAIRS if pair.sparse_gradients for cls in (pair.ours, pair.theirs))


def as_gradient(optimizer, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` as ``optimizer`` takes it: sparse COO, one stored row per row of the parameter (as
    ``nn.Embedding(sparse=True)`` makes them), for a class that takes sparse gradients only."""
    return grad.to_sparse(1) if isinstance(optimizer, SPARSE_ONLY) and grad.dim() else grad


def pair_ids(pairs=PAIRS):
    return [pair.name for pair in pairs]


def cases(pairs=PAIRS):
    """(pair, desc, kwargs) for every coinciding input of every pair, as pytest parameters."""
    return [pytest.param(pair, desc, kwargs, id=f"{pair.name}-{desc}") for pair in pairs
            for desc, kwargs in pair.inputs()]


def has_kernel(cls: type) -> bool:
    """Every elementwise chain gets a generated kernel, where a C compiler is."""
    return descend.backends.cpu.available()
