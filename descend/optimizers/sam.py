"""Sharpness-aware minimization over any base optimizer."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..adapter.finite import all_finite, gradients_pass
from ..plan.hyper import check_nonnegative


def _entered(factory: Callable[[], Any] | None):
    return factory() if factory is not None else contextlib.nullcontext()


@contextlib.contextmanager
def frozen_batchnorm_stats(model: torch.nn.Module):
    """Within the block, BatchNorm layers in training mode normalise with the batch's statistics but
    leave their running mean, variance and batch count alone.

    For SAM's second pass (``sam.step(closure, second_pass=lambda: frozen_batchnorm_stats(model))``):
    without it every batch updates the running statistics twice, once at the perturbed ``θ + ε̂``.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False  # training mode then uses batch statistics and updates nothing
    try:
        yield model
    finally:
        for layer in layers:
            layer.track_running_stats = True


class SAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimization (Foret et al. 2021) wrapped around ``base_optimizer``.

    .. math::
        \hat\epsilon &= \rho\,\frac{g}{\lVert g \rVert_2}, \qquad g = \nabla f(\theta)
            \qquad (\text{adaptive: } \hat\epsilon = \rho\,\frac{T^2 g}{\lVert T g\rVert_2},
            \ T = |\theta|, \text{ Kwon et al. 2021}) \\
        \theta &\leftarrow \text{base\_step}\big(\theta,\ \nabla f(\theta + \hat\epsilon)\big)

    The norm is global: one ``‖g‖₂`` over every parameter of every group.  The
    base optimizer is built from the same param groups (``base_kwargs`` go to
    it), so lr schedulers and ``param_groups`` edits reach it, and
    ``state_dict()`` is the base optimizer's, with SAM's own skipped steps.

    Use ``step(closure)`` with a closure that zeroes the gradients, runs forward
    and backward, and returns the loss; SAM calls it twice (at ``θ`` and at
    ``θ + ε̂``) and returns the first loss.  Or call ``first_step()`` after the
    first backward and ``second_step()`` after the second.

    Under ``DistributedDataParallel`` both backward passes synchronise, so by default the
    perturbation uses the all-reduced gradient: a 2-rank run equals a 1-process run with the global
    batch.  ``step(closure, first_pass=model.no_sync)`` runs the first backward without
    synchronising, so each rank perturbs with its own gradient (the paper's m-sharpness, §4); the
    second backward is all-reduced and the ranks stay identical.

    A non-finite first gradient follows the base optimizer's ``nonfinite``
    policy (``"raise"`` for a base without one): ``"skip"`` leaves ``θ``
    unperturbed, skips the base step and counts it in ``skipped_steps``.
    """

    def __init__(
        self,
        params,
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ):
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise TypeError(
                "SAM: base_optimizer must be an optimizer class such as descend.SGD "
                f"(the class, not an instance), got {base_optimizer!r}"
            )
        if issubclass(base_optimizer, SAM):
            raise TypeError("SAM: base_optimizer cannot itself be SAM")
        self._perturbed: dict[Tensor, Tensor] = {}
        self._skip_second_step = False
        self._own_skipped_steps = 0
        super().__init__(params, dict(rho=rho, adaptive=adaptive))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self._share_base_state()
        self.defaults.update(self.base_optimizer.defaults)

    def _share_base_state(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for name in ("rho", "adaptive"):
            param_group.setdefault(name, self.defaults[name])
        check_nonnegative("SAM", "rho", param_group["rho"])
        if hasattr(self, "base_optimizer"):
            self.base_optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    @property
    def nonfinite(self) -> str:
        return getattr(self.base_optimizer, "nonfinite", "raise")

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient, at ``θ`` (here) or at ``θ + ε̂`` (the base)."""
        return self._own_skipped_steps + getattr(self.base_optimizer, "skipped_steps", 0)

    def _params_with_grad(self) -> list[tuple[dict[str, Any], Tensor]]:
        return [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Moves ``θ`` to ``θ + ε̂`` using the gradients now in ``.grad``."""
        work = self._params_with_grad()
        advice = "Pass nonfinite='skip' to the base optimizer to skip such steps."
        if not gradients_pass("SAM", self.nonfinite, [p.grad for _, p in work], advice):
            self._skip_second_step = True
            self._own_skipped_steps += 1
        elif work:
            scaled = [p.abs() * p.grad if group["adaptive"] else p.grad for group, p in work]
            device = work[0][1].device
            grad_norm = torch.stack([s.norm(2).to(device) for s in scaled]).norm(2)
            try:
                for (group, p), s in zip(work, scaled):
                    direction = -1.0 if group.get("maximize", False) else 1.0
                    scale = direction * group["rho"] / (grad_norm.to(p.device) + 1e-12)
                    perturbation = (s * p.abs() if group["adaptive"] else s) * scale.to(p.dtype)
                    self._perturbed[p] = p.clone()
                    p.add_(perturbation)
            except BaseException:  # e.g. out of memory for the copies: θ as it was
                self.restore()
                raise
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restores ``θ`` exactly and takes the base step with the gradients at ``θ + ε̂``."""
        skip = self._skip_second_step
        self.restore()
        if not skip:
            self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Puts ``θ`` back where ``first_step`` found it (nothing to do when it is there)."""
        for p, original in self._perturbed.items():
            p.copy_(original)
        self._perturbed.clear()
        self._skip_second_step = False

    def step(
        self,
        closure: Callable[[], Any] | None = None,
        first_pass: Callable[[], Any] | None = None,
        second_pass: Callable[[], Any] | None = None,
    ) -> Any:
        """``closure`` at θ, ``first_step``, ``closure`` at θ + ε̂, ``second_step``; returns the first loss.

        ``first_pass``, ``second_pass``: context-manager factories for the two evaluations, e.g. DDP's
        ``model.no_sync`` for the first, ``lambda: frozen_batchnorm_stats(model)`` for the second (so
        that BatchNorm's running statistics see each batch once, at ``θ``).  If anything raises after
        ``θ`` was perturbed (an out-of-memory error in the second pass that the training loop catches),
        ``θ`` is restored before the error propagates.
        """
        if closure is None:
            raise ValueError(
                "SAM.step() needs a closure that zeroes the gradients, runs forward and backward, "
                "and returns the loss (SAM evaluates the gradient twice); or call first_step() "
                "and second_step() around your own second backward pass"
            )
        with torch.enable_grad(), _entered(first_pass):
            loss = closure()
        try:
            self.first_step(zero_grad=True)
            with torch.enable_grad(), _entered(second_pass):
                closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return loss

    def scaled_step(self, closure: Callable[[], Tensor], scaler: torch.amp.GradScaler) -> Tensor:
        """One SAM step with mixed precision: ``closure`` computes the loss (under ``torch.autocast``)
        and returns it without calling ``backward``; ``scaler`` is the ``torch.amp.GradScaler`` whose
        ``update()`` the loop calls after this step, as usual.

        The first gradient is unscaled (``scaler.unscale_(sam)``) before ``ε̂`` is computed from it; when
        it overflowed, the step is skipped (``θ`` not perturbed, nothing stepped) and ``scaler.update()``
        lowers the scale, whatever the base optimizer's ``nonfinite``.  The second gradient goes to
        ``scaler.step(base_optimizer)``, which unscales it and skips the base step when it overflowed.
        Returns the first loss.
        """
        self.zero_grad()
        with torch.enable_grad():
            loss = closure()
            scaler.scale(loss).backward()
        scaler.unscale_(self)
        if not all_finite([p.grad for _, p in self._params_with_grad()]):
            self.zero_grad()
            return loss  # the scaler found the inf too: its update() lowers the scale
        try:
            self.first_step(zero_grad=True)
            with torch.enable_grad():
                scaler.scale(closure()).backward()
        except BaseException:
            self.restore()
            raise
        self.restore()
        scaler.step(self.base_optimizer)
        return loss

    def __getstate__(self) -> dict[str, Any]:
        """torch's Optimizer pickles only defaults, state and groups; SAM needs its base optimizer too."""
        return {
            **super().__getstate__(),
            "base_optimizer": self.base_optimizer,
            "_perturbed": self._perturbed,
            "_skip_second_step": self._skip_second_step,
            "_own_skipped_steps": self._own_skipped_steps,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "base_optimizer" in self.__dict__:
            self._share_base_state()

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict``, with SAM's own count of skipped steps under ``"sam"``
        (the base optimizer alone loads it too, and ignores that entry)."""
        return {**self.base_optimizer.state_dict(), "sam": {"skipped_steps": self._own_skipped_steps}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a checkpoint of ``state_dict()``; one written before SAM saved its own skipped steps
        (or by the base optimizer alone) loads with SAM's own count at 0."""
        state_dict = dict(state_dict)
        own = state_dict.pop("sam", None) or {}
        skipped = own.get("skipped_steps", 0) if isinstance(own, dict) else None
        if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
            raise ValueError(f"SAM: the checkpoint's SAM skipped_steps must be a whole number >= 0, got {skipped!r}")
        self.base_optimizer.load_state_dict(state_dict)
        self._share_base_state()
        self._own_skipped_steps = skipped
