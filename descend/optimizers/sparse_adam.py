"""SparseAdam: Adam on the rows a sparse gradient names (``nn.Embedding(sparse=True)``)."""
from __future__ import annotations

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import check_positive
from ..steps import ScaleByInverseRms
from ..steps.torch_rest import CorrectedStepSize, MomentsByIncrement
from .common import check_betas


class SparseAdam(ChainOptimizer):
    r"""Adam for sparse gradients, as torch.optim.SparseAdam: only the rows the gradient names move.

    For every row ``i`` a (coalesced: repeated indices summed) sparse gradient stores a value for:

    .. math::
        m_i &\leftarrow m_i + (g_i - m_i)(1-\beta_1), \qquad v_i \leftarrow v_i + (g_i^2 - v_i)(1-\beta_2) \\
        \theta_i &\leftarrow \theta_i - \alpha\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \frac{m_i}{\sqrt{v_i} + \epsilon}

    and every other row, of the parameter and of its moments, stays as it is (a "lazy" Adam: a row's moments
    decay only in the steps that touch it; ``t`` counts every step).  It takes sparse COO gradients only
    (a dense one is torch's ``RuntimeError``: use ``Adam``) and dense, real parameters.  The rows are
    gathered, updated on any path (the reference chain, ``foreach``, the generated C or Triton kernel, as
    routing picks for dense tensors of their shape) and scattered back (descend.adapter.sparse).  State as
    torch's: ``step``, ``exp_avg``, ``exp_avg_sq`` (torch keeps ``step`` as a Python number, descend as a
    float32 tensor; checkpoints load both ways).  The chain is
    ``[MomentsByIncrement, ScaleByInverseRms, CorrectedStepSize]``.
    """

    state_keys = frozenset({"exp_avg", "exp_avg_sq"})
    sparse_gradients = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        fused: bool | None = None,
        foreach: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        # torch's Optimizer.__setstate__ (run by load_state_dict) adds differentiable=False to the defaults: it is
        # there from the start, so that save -> load -> save changes nothing
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize, differentiable=False)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        check_positive(owner, "lr", group["lr"])
        check_positive(owner, "eps", group["eps"])
        check_betas(owner, group["betas"])
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        sparse = [[index, k] for k, p in enumerate(group["params"]) if p.is_sparse]
        if sparse:  # torch's words
            raise ValueError(f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors")
        complex_ = [[index, k] for k, p in enumerate(group["params"]) if p.is_complex()]
        if complex_:
            raise ValueError(f"Complex params at indices {complex_}: SparseAdam does not support complex parameters")

    def chain(self, group):
        beta1, beta2 = group["betas"]
        return [MomentsByIncrement(beta1, beta2), ScaleByInverseRms("exp_avg_sq", group["eps"]),
                CorrectedStepSize(group["lr"], beta1, beta2)]
