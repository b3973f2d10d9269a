"""Optimizers of your own: a torch.optim-compatible class from a function ``group -> list of steps``.

Two ways to compose, both running the chain on every path (a generated fused kernel, the reference
chain, the multi-tensor chain):

* subclass any descend optimizer (or ``ChainOptimizer``) and override ``chain(group)``::

      class SGDWithExtraDecay(descend.SGD):
          def chain(self, group):
              return [AddWeightDecay(0.5)] + super().chain(group)

* or call ``make_optimizer`` with the chain as a function of the param group (below).

A new step is a small dataclass with a ``formula``; see ``descend.steps.Elementwise``.
"""
from __future__ import annotations

import inspect
import keyword
import sys
from collections.abc import Callable
from typing import Any

from ..adapter.optimizer import ChainOptimizer
from ..steps import Transform

RESERVED = ("params", "nonfinite", "fused", "foreach", "state_dtype", "max_grad_norm")


def make_optimizer(
    name: str,
    chain: Callable[[dict[str, Any]], list[Transform]],
    defaults: dict[str, Any],
    validate: Callable[[dict[str, Any]], None] | None = None,
    *,
    doc: str | None = None,
) -> type[ChainOptimizer]:
    """A ``torch.optim.Optimizer`` class named ``name`` whose update of a parameter in ``group`` is
    ``chain(group)``.

    The class takes ``(params, *hyperparameters)`` with the keys of ``defaults`` as its arguments, in that
    order (``maximize=False`` is added when ``defaults`` has none), then the keyword-only ``nonfinite``,
    ``fused``, ``foreach``, ``state_dtype`` and ``max_grad_norm`` of every descend optimizer.  ``validate(group)`` runs for every param group
    and raises ``ValueError`` for a bad value (use ``descend.plan.hyper.check_*``).  A step counter
    (``state["step"]``) is kept where a formula reads ``t``.  Param groups, lr schedulers,
    ``state_dict`` and resuming work as for the built-in classes.

    Example, Adam without its first-moment bias correction::

        from descend.steps import EmaOfSquares, Momentum, ScaleByInverseRms, ScaleByLearningRate

        def steps(group):
            beta1, beta2 = group["betas"]
            return [EmaOfSquares(beta2, "exp_avg_sq"), Momentum(beta1, dampening=beta1, key="exp_avg"),
                    ScaleByInverseRms("exp_avg_sq", group["eps"], debias_beta=beta2),
                    ScaleByLearningRate(group["lr"])]

        HalfCorrectedAdam = descend.make_optimizer(
            "HalfCorrectedAdam", steps, defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8))
        optimizer = HalfCorrectedAdam(model.parameters(), lr=3e-4)
        print(optimizer.kernel_info()[0])   # [EmaOfSquares, ...] runs on a generated C kernel
    """
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"make_optimizer: name must be a Python identifier, got {name!r}")
    if not callable(chain):
        raise TypeError(f"make_optimizer: chain must be a function group -> list of steps, got {chain!r}")
    if validate is not None and not callable(validate):
        raise TypeError(f"make_optimizer: validate must be a function group -> None, got {validate!r}")
    defaults = dict(defaults)
    for key in defaults:
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ValueError(f"make_optimizer: hyperparameter names must be identifiers, got {key!r}")
        if key in RESERVED:
            raise ValueError(f"make_optimizer: {key!r} is an argument of every optimizer; it cannot be a default")
    defaults.setdefault("maximize", False)

    Parameter = inspect.Parameter
    signature = inspect.Signature(
        [Parameter("self", Parameter.POSITIONAL_OR_KEYWORD), Parameter("params", Parameter.POSITIONAL_OR_KEYWORD)]
        + [Parameter(key, Parameter.POSITIONAL_OR_KEYWORD, default=value) for key, value in defaults.items()]
        + [Parameter("nonfinite", Parameter.KEYWORD_ONLY, default="raise"),
           Parameter("fused", Parameter.KEYWORD_ONLY, default=None),
           Parameter("foreach", Parameter.KEYWORD_ONLY, default=None),
           Parameter("state_dtype", Parameter.KEYWORD_ONLY, default=None),
           Parameter("max_grad_norm", Parameter.KEYWORD_ONLY, default=None)]
    )
    build = chain

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{name}: {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        params, nonfinite, fused, foreach, state_dtype, max_grad_norm = (arguments.pop(key) for key in RESERVED)
        ChainOptimizer.__init__(self, params, arguments, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    __init__.__signature__ = signature

    def chain_method(self, group):
        return list(build(group))

    def validate_method(self, group):
        if validate is not None:
            validate(group)

    chain_method.__name__, validate_method.__name__ = "chain", "validate"

    caller = sys._getframe(1).f_globals.get("__name__", __name__)  # so that pickle finds a module-level class
    namespace = {
        "__init__": __init__,
        "chain": chain_method,
        "validate": validate_method,
        "__module__": caller,
        "__qualname__": name,
        "__doc__": doc if doc is not None else f"{name}: a descend optimizer made by make_optimizer from "
                                              f"{getattr(chain, '__qualname__', repr(chain))}.",
    }
    return type(name, (ChainOptimizer,), namespace)


__all__ = ["make_optimizer"]
