"""The learning-rate range test (Smith 2017; fastai's ``lr_find``) for any model and descend optimizer.

The curve is read in log loss against log learning rate: mini-batch noise is mostly multiplicative
(each batch has its own scale), and a descent spans orders of magnitude on some problems and a
fraction of one on others (a loss that is ever ≤ 0 is read as it is).  The smoothing is zero-lag
(an EMA run forwards, then backwards), so the smoothed curve falls where the raw one falls; the
stopping rule uses the causal EMA only.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

METHODS = ("halfway", "valley", "minimum", "steepest")
DESCENT = 0.1  # the descent starts where the smoothed log loss has fallen 10% of its total drop
FLOOR = math.log(30)  # "halfway" counts a fall of the log loss up to 30×: a noiseless loss can fall 10⁶×
SIGNIFICANCE = 6.0  # a drop must be this many noise deviations of the smoothed curve to count


@dataclass
class LRFinderResult:
    """The curve of a range test and what it suggests.

    ``suggestion`` is the learning rate chosen by ``method`` (see :func:`lr_find`), or ``None``
    when the curve gives no honest answer; ``verdict`` says why in words.  ``suggestions`` holds
    every rule's answer.  The regions split the tested range: ``too_low`` (the loss has not yet
    fallen 10% of its drop), ``right`` (the descent, up to the minimum of the smoothed loss),
    ``too_high`` (past the minimum); ``too_low`` and ``right`` are ``None`` without a descent.
    ``losses`` are the raw mini-batch losses, ``smoothed`` the zero-lag smoothed ones.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    too_low: tuple[float, float] | None
    right: tuple[float, float] | None
    too_high: tuple[float, float] | None
    diverged_at: float | None
    method: str = "halfway"
    verdict: str = ""
    suggestions: dict[str, float | None] = field(default_factory=dict)
    drop: float = 0.0  # fall of the smoothed log loss from its plateau to its minimum (of the loss if ever ≤ 0)
    noise: float = 0.0  # deviation of the smoothed curve expected from mini-batch noise alone (same units)
    skip_start: int = 0
    skip_end: int = 0

    def to_markdown(self) -> str:
        """The numbers behind the plot as a markdown table."""
        def lr(value):
            return "–" if value is None else f"{value:.3g}"

        def region(bounds):
            return "–" if bounds is None else f"{bounds[0]:.3g} – {bounds[1]:.3g}"

        rows = [("suggestion", f"{lr(self.suggestion)} ({self.method})"), ("verdict", self.verdict),
                *((f"rule {name}", lr(value)) for name, value in self.suggestions.items()),
                ("too low", region(self.too_low)), ("right", region(self.right)), ("too high", region(self.too_high)),
                ("diverged at", lr(self.diverged_at)),
                ("drop of the smoothed curve", f"{self.drop:.3g} (noise {self.noise:.2g}; in log loss if it is > 0)"),
                ("points", f"{len(self.lrs)} ({self.skip_start} skipped at the start, {self.skip_end} at the end)"),
                ("loss first / lowest smoothed", f"{self.losses[0]:.4g} / {min(self.smoothed):.4g}")]
        return "\n".join(["| quantity | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])

    def plot(self, axis=None):
        """Raw and smoothed loss against learning rate (log x): regions shaded, skipped ends hatched,
        every rule's suggestion and the divergence point marked."""
        import matplotlib.pyplot as plt

        if axis is None:
            _, axis = plt.subplots(figsize=(7, 4.5))
        axis.plot(self.lrs, self.losses, color="0.7", linewidth=1, label="loss (raw)")
        axis.plot(self.lrs, self.smoothed, color="tab:blue", label="smoothed loss")
        for bounds, color, label in ((self.too_low, "tab:gray", "too low"), (self.right, "tab:green", "right"),
                                     (self.too_high, "tab:red", "too high")):
            if bounds is not None:
                axis.axvspan(*bounds, color=color, alpha=0.12, label=label)
        skipped = [(self.lrs[0], self.lrs[self.skip_start])] if self.skip_start else []
        if self.skip_end:
            skipped.append((self.lrs[-1 - self.skip_end], self.lrs[-1]))
        for low, high in skipped:
            axis.axvspan(low, high, facecolor="none", edgecolor="0.6", hatch="//", linewidth=0)
        markers = iter("os^v")
        for name, value in self.suggestions.items():
            if value is not None and name != self.method:
                axis.plot([value], [_at(self.lrs, self.smoothed, value)], next(markers), color="0.3",
                          markersize=5, linestyle="none", label=f"{name}: {value:.2g}")
        if self.suggestion is not None:
            axis.axvline(self.suggestion, color="k", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        if self.diverged_at is not None:
            axis.axvline(self.diverged_at, color="tab:red", linestyle=":", label=f"diverged at {self.diverged_at:.2g}")
        axis.set_xscale("log"), axis.set_xlabel("learning rate"), axis.set_ylabel("loss")
        if all(v > 0 for v in self.losses):
            axis.set_yscale("log")
            axis.set_ylim(min(self.losses + self.smoothed) * 0.8,
                          max(self.smoothed[0], min(max(self.losses), 4 * self.smoothed[0])) * 1.3)
        axis.set_title(self.verdict, fontsize=8)
        axis.legend(fontsize=7)
        return axis.figure


def lr_find(
    model: nn.Module,
    loss_fn: Callable,
    data: Iterable,
    optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer | None = None,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    smoothing: float | None = None,
    diverge_factor: float = 4.0,
    skip_start: int | None = None,
    skip_end: int = 3,
    method: str = "halfway",
    **optimizer_kwargs,
) -> LRFinderResult:
    r"""Trains ``steps`` steps with the learning rate growing exponentially from ``start`` to ``end``.

    ``data`` yields ``(inputs, targets)`` batches (a DataLoader or a list); when it holds fewer
    batches than ``steps`` it is cycled, with a warning (a one-shot iterator ends the test early).
    The loss is ``loss_fn(model(inputs), targets)``.  ``optimizer`` is an optimizer class (default
    ``descend.Adam``, built with ``optimizer_kwargs``) or an existing optimizer of ``model``.

    The curve is :math:`\ell_i = \log L_i` against :math:`\log \alpha_i` (:math:`\ell_i = L_i` if a
    loss is ever :math:`\le 0`; the stopping rule is then :math:`L > \text{best} + (\text{factor} - 1)
    |\text{best}|`, today's rule).  ``smoothing`` is the
    factor :math:`\beta` of a debiased EMA run over :math:`\ell` forwards and then backwards, which
    has no lag; the default is :math:`\beta = \max(0, 1 - 40/\text{steps})` (0.6 for 100 steps).
    The test stops once the causal EMA exceeds its best by :math:`\log(\text{diverge\_factor})`,
    or the loss turns non-finite (``diverged_at``).

    The suggestion is read from the points after the first ``skip_start`` (default
    ``steps // 10``) and before the last ``skip_end``; ``method`` picks the rule:

    * ``"halfway"`` (default): where the smoothed log loss has first fallen half its drop, i.e. to
      the geometric mean of its plateau and its minimum; a drop counts up to 30× (a noiseless loss
      falls by 10⁶ after the learning rate passed its stable limit).  The descent, ``right``, runs
      from where the smoothed log loss has fallen 10% of its drop to its minimum.
    * ``"valley"``: fastai's valley read on the descent: the longest decreasing subsequence of the
      smoothed curve ending at its minimum; the learning rate halfway along it in log lr.
    * ``"minimum"``: the minimum of the smoothed loss divided by 10 (fastai's ``minimum``).
    * ``"steepest"``: the steepest fall of the smoothed log loss, :math:`\min d\ell/d\log\alpha`.

    ``benchmarks/lr_calibration.py`` measures the rules against each other (README, lr_find).

    The suggestion is ``None`` when the smoothed log loss falls less than about six times its
    noise (``verdict`` says "flat" or "too noisy"), and always lies below ``diverged_at``.
    The model's parameters, buffers and gradients (``p.grad``: None stays None), and an existing
    optimizer's state, are restored afterwards, also when the test fails.

    Changed: ``smoothing`` is the zero-lag EMA's factor (was a causal EMA's, default 0.98);
    ``suggestion``, ``too_low`` and ``right`` can be ``None``; the suggestion was the steepest fall
    of the loss, which noise at the start of the range decided; a first loss that is ≤ 0 no longer
    raises.  New: ``skip_start``, ``skip_end``, ``method``; ``result.verdict``, ``.suggestions``,
    ``.to_markdown()``.
    """
    if not (0 < start < end) or not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"lr_find: need 0 < start < end, got start={start!r}, end={end!r}")
    if steps < 5:
        raise ValueError(f"lr_find: steps must be >= 5, got {steps}")
    if smoothing is None:
        smoothing = max(0.0, 1.0 - 40.0 / steps)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"lr_find: smoothing must lie in [0, 1), got {smoothing!r}")
    if not diverge_factor > 1.0:
        raise ValueError(f"lr_find: diverge_factor must be > 1, got {diverge_factor!r}")
    skip_start = steps // 10 if skip_start is None else skip_start
    if skip_start < 0 or skip_end < 0 or skip_start + skip_end > steps - 3:
        raise ValueError(f"lr_find: need skip_start, skip_end >= 0 leaving 3 of the {steps} steps, got "
                         f"skip_start={skip_start}, skip_end={skip_end}")
    if method not in METHODS:
        raise ValueError(f"lr_find: method must be one of {METHODS}, got {method!r}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("lr_find: the model has no trainable parameters")
    if optimizer is None:
        from ..optimizers import Adam

        optimizer = Adam
    saved_model = copy.deepcopy(model.state_dict())
    if isinstance(optimizer, torch.optim.Optimizer):
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        opt = optimizer
    else:
        saved_optimizer = None
        opt = optimizer(trainable, lr=start, **optimizer_kwargs)
    was_training = model.training
    stepped = [p for group in opt.param_groups for p in group["params"]]
    saved_grads = [(p, p.grad, None if p.grad is None else p.grad.clone())
                   for p in dict.fromkeys([*model.parameters(), *stepped])]
    try:
        lrs, losses, diverged_at = _range_test(model, loss_fn, data, opt, start, end, steps, smoothing, diverge_factor)
    finally:
        model.load_state_dict(saved_model)
        model.train(was_training)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        _restore_grads(saved_grads)
    return summarise(lrs, losses, diverged_at, smoothing, skip_start, skip_end, method)


def _restore_grads(saved: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]) -> None:
    """Every ``p.grad`` as it was before the range test: None stays None (the test's last, high-lr
    gradient would join the first update of a loop that calls backward before zero_grad), and a
    gradient tensor is the same tensor with its values."""
    with torch.no_grad():
        for param, grad, values in saved:
            if grad is not None:
                grad.copy_(values)
            param.grad = grad


def _range_test(model, loss_fn, data, optimizer, start, end, steps, smoothing, diverge_factor):
    """(learning rates, raw losses, the learning rate at which the run diverged or None)."""
    batches = iter(_cycle(data, steps))
    lrs, losses = [], []
    diverged_at = None
    averages, bests = [0.0, 0.0], [math.inf, math.inf]  # causal EMAs (and their best) of log L and of L
    positive = True  # every loss so far > 0: the curve is log L
    model.train()
    for index in range(steps):
        lr = start * (end / start) ** (index / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            inputs, targets = next(batches)
        except StopIteration:
            warnings.warn(f"lr_find: the data ran out after {index} of {steps} steps (a one-shot iterator); "
                          "the test ends there", stacklevel=3)
            break

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            return loss

        try:
            loss = float(optimizer.step(closure).detach())
        except FloatingPointError:  # a descend optimizer refusing a non-finite gradient: the run diverged
            loss = math.nan
        if not math.isfinite(loss):
            if index == 0:
                raise ValueError("lr_find: the loss is not finite at the first step, before the learning rate grew")
            diverged_at = lr
            break
        lrs.append(lr), losses.append(loss)
        positive = positive and loss > 0
        for k, value in enumerate((math.log(loss) if positive else 0.0, loss)):
            averages[k] = smoothing * averages[k] + (1 - smoothing) * value
            bests[k] = min(bests[k], averages[k] / (1 - smoothing ** (index + 1)))  # debiased, as Adam's moments
        causal = [average / (1 - smoothing ** (index + 1)) for average in averages]
        # log L rose by log(diverge_factor); a loss that is not always positive: L rose past factor × |best|
        if (causal[0] > bests[0] + math.log(diverge_factor) if positive
                else causal[1] > bests[1] + (diverge_factor - 1) * abs(bests[1])):
            diverged_at = lr
            break
    return lrs, losses, diverged_at


def _cycle(data: Iterable, steps: int):
    """The batches of ``data`` over and over, with a warning when it starts again (a one-shot iterator: once)."""
    passes = 0
    while True:
        count = 0
        for batch in data:
            count += 1
            yield batch
        if count == 0:
            raise ValueError("lr_find: the data yielded no batches")
        if iter(data) is data:
            return
        passes += 1
        if passes == 1:
            warnings.warn(f"lr_find: the data holds {count} batches, fewer than the {steps} steps of the test; "
                          "cycling through it again (the same batches repeat)", stacklevel=4)


def _ema(values: list[float], beta: float) -> list[float]:
    out, average = [], 0.0
    for index, value in enumerate(values):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** (index + 1)))
    return out


def zero_lag(values: list[float], beta: float) -> list[float]:
    """A debiased EMA run forwards, then backwards over the result: smooth, and in phase with ``values``."""
    return _ema(_ema(values, beta)[::-1], beta)[::-1]


def _at(lrs, values, lr):
    """``values`` at the point whose learning rate is nearest ``lr`` in log scale."""
    return values[min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / lr)))]


def summarise(lrs, losses, diverged_at, smoothing, skip_start, skip_end, method="halfway") -> LRFinderResult:
    """Reads regions and suggestions off a recorded curve (see :func:`lr_find`)."""
    if not lrs:
        raise ValueError("lr_find: no step was recorded")
    positive = all(v > 0 for v in losses)
    logs = [math.log(v) for v in losses] if positive else list(losses)  # the curve: log L, or L if L ≤ 0 occurs
    smooth = zero_lag(logs, smoothing)
    count = len(lrs)
    first, last = min(skip_start, count - 1), max(min(skip_start, count - 1), count - 1 - skip_end)
    window = range(first, last + 1)
    lowest = min(window, key=smooth.__getitem__)
    top = max(smooth[first:lowest + 1])
    drop = top - smooth[lowest]
    tiny = 1e-3 if positive else 1e-3 * max(abs(top), abs(smooth[lowest]), 1e-12)  # a flat curve falls less
    noise = _noise(logs, smooth, smoothing, window)
    too_high = (lrs[lowest], diverged_at or lrs[-1]) if lowest < count - 1 or diverged_at else None
    smoothed = [math.exp(v) for v in smooth] if positive else smooth
    base = dict(lrs=lrs, losses=losses, smoothed=smoothed, diverged_at=diverged_at, method=method, drop=drop,
                noise=noise, skip_start=first, skip_end=count - 1 - last)
    if diverged_at is not None and count < skip_start + skip_end + 5:
        verdict = (f"no suggestion: the loss diverged after {count} steps, at {diverged_at:.3g}, before the curve "
                   "could be read; start lower")
        return LRFinderResult(suggestion=None, too_low=None, right=None, too_high=too_high, verdict=verdict,
                              suggestions=dict.fromkeys(METHODS), **base)
    if drop <= SIGNIFICANCE * noise or drop < tiny:
        kind = "flat" if drop < tiny or smooth[last] >= smooth[first] - tiny else "too noisy"
        verdict = (f"no suggestion: the loss is {kind} (its smoothed {'log ' if positive else ''}falls {drop:.2g}, "
                   f"noise {noise:.2g}); is the model frozen, or the range too narrow, or the batches too small?")
        return LRFinderResult(suggestion=None, too_low=None, right=None, too_high=too_high, verdict=verdict,
                              suggestions=dict.fromkeys(METHODS), **base)
    # the descent: after the last point (before the minimum) still above 10% of the drop
    begins = max((i for i in range(first, lowest + 1) if smooth[i] > top - DESCENT * drop), default=first)
    rules = {"halfway": _halfway, "valley": _valley, "minimum": _minimum, "steepest": _steepest}
    limit = diverged_at or math.inf
    counted = min(drop, FLOOR) if positive else drop  # a fall of the log loss counts up to 30×
    suggestions = {}
    for name, rule in rules.items():
        value = rule(lrs, smooth, begins, lowest, top, counted)
        suggestions[name] = None if value is None else min(value, limit / 1.5)  # never at the divergence
    suggestion = suggestions[method]
    verdict = (f"{suggestion:.3g} by the {method} rule; the loss falls between {lrs[begins]:.3g} and {lrs[lowest]:.3g}"
               + (f" and diverged at {diverged_at:.3g}" if diverged_at else ""))
    return LRFinderResult(suggestion=suggestion, too_low=(lrs[0], lrs[begins]), right=(lrs[begins], lrs[lowest]),
                          too_high=too_high, verdict=verdict, suggestions=suggestions, **base)


def _noise(logs, smooth, beta, window) -> float:
    """The deviation of the smoothed curve that mini-batch noise alone would cause: the raw points'
    robust deviation from the smoothed curve (1.4826 × median absolute deviation) times the filter's
    noise gain √Σw², w its weights (the response to a unit impulse)."""
    residuals = sorted(abs(logs[i] - smooth[i]) for i in window)
    spread = 1.4826 * residuals[len(residuals) // 2]
    impulse = [0.0] * 101
    impulse[50] = 1.0
    gain = math.sqrt(sum(w * w for w in zero_lag(impulse, beta)))
    return spread * gain


def _valley(lrs, smooth, begins, lowest, top, drop):
    """fastai's valley read on the descent: the longest decreasing subsequence of the smoothed curve
    that ends at its minimum, and the learning rate halfway along it (geometric mean of its ends)."""
    length = {}
    for i in range(begins, lowest + 1):
        length[i] = 1 + max((length[j] for j in range(begins, i) if smooth[j] > smooth[i]), default=0)
    # walk back from the minimum along a longest chain to find where the valley starts
    i = lowest
    while length[i] > 1:
        i = min(j for j in range(begins, i) if smooth[j] > smooth[i] and length[j] == length[i] - 1)
    return math.sqrt(lrs[i] * lrs[lowest])


def _minimum(lrs, smooth, begins, lowest, top, drop):
    return lrs[lowest] / 10


def _steepest(lrs, smooth, begins, lowest, top, drop):
    if lowest - begins < 2:
        return lrs[begins]
    slopes = {i: (smooth[i + 1] - smooth[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(begins + 1, lowest)}
    return lrs[min(slopes, key=slopes.__getitem__)]


def _halfway(lrs, smooth, begins, lowest, top, drop):
    return lrs[next(i for i in range(begins, lowest + 1) if smooth[i] <= top - drop / 2)]
