"""Sparse gradients (``nn.Embedding(sparse=True)``): the update of the rows a gradient names, on any path.

A class that declares ``sparse_gradients = True`` (``SparseAdam``, as torch.optim.SparseAdam) takes gradients
of ``torch.sparse_coo`` layout, and no dense ones (descend.adapter.routing).  Each gradient is coalesced
(repeated indices summed, as torch does); the rows it names (one per stored index: the entries of its sparse
dims) are gathered from the parameter and from every state entry shaped like it into dense tensors of shape
``[nnz, *dense dims]``, with the gradient's values beside them; the chain updates those on the path routing
picked (the reference chain one tensor at a time or on lists, a generated C or Triton kernel), and they are
scattered back.  Every other row, and its state, is left exactly as it was; the step counter and per-tensor
numbers count the step, as in torch, also when the gradient stores no value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..backends.eager import Work


@dataclass
class RowsWork(Work):
    """A ``Work`` over the gathered rows; ``whole[i]`` is what rows ``i`` were gathered from: the parameter,
    its state, and the index tensors (one per sparse dim)."""

    whole: list[tuple[Tensor, dict, tuple[Tensor, ...]]] = field(default_factory=list)


def gather(work: Work) -> RowsWork:
    """``work`` (whole parameters with sparse gradients) as a ``RowsWork`` over the rows their gradients name."""
    gathered = {spec.key for spec in work.variant.specs if spec.shape == "param"}
    params, grads, states, whole = [], [], [], []
    for param, grad, state in zip(work.params, work.grads, work.states):
        if any(state[key].dtype == torch.uint8 for key in gathered if key in state):
            raise ValueError(f"{work.owner}: 8-bit state (stored by blocks of 256) cannot take sparse gradients, "
                             "which update single rows; use another state_dtype")
        grad = grad.coalesce()
        index = tuple(grad.indices())
        params.append(rows(param, index))
        grads.append(grad.values().contiguous())
        states.append({key: rows(value, index) if key in gathered else value for key, value in state.items()})
        whole.append((param, state, index))
    return RowsWork(work.plan, work.variant, work.chain, work.numbers, params, grads, states, work.steps, work.codec,
                    owner=work.owner, whole=whole)


def rows(tensor: Tensor, index: tuple[Tensor, ...]) -> Tensor:
    """The rows of ``tensor`` that ``index`` names, as a new dense tensor (``index_select`` where one index
    tensor names whole rows: several times faster than indexing)."""
    return tensor.index_select(0, index[0]) if len(index) == 1 else tensor[index]


def scatter(work: RowsWork) -> None:
    """The updated rows (parameter and state) written back where they were gathered from."""
    for (param, state, index), updated, row_state in zip(work.whole, work.params, work.states):
        param[index] = updated
        for key, value in row_state.items():
            if value is not state[key]:
                state[key][index] = value


__all__ = ["RowsWork", "gather", "rows", "scatter"]
