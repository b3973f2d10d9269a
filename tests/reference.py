"""Independent references: each optimizer written from its textbook formula in plain tensor math.

Nothing here imports descend.  Each ``*_step`` takes the parameters, their
gradients, a per-parameter state dict it owns, the step number ``t`` (from 1)
and the hyperparameters, and returns the new parameters (out of place).
"""
from __future__ import annotations

import math

import torch


def _zeros(state, key, like):
    if key not in state:
        state[key] = torch.zeros_like(like)
    return state[key]


def sgd_step(params, grads, states, t, lr, weight_decay=0.0):
    """Vanilla SGD with weight decay as ``θ ← (1−αλ)θ − αg``."""
    return [(1 - lr * weight_decay) * p - lr * g for p, g in zip(params, grads)]


def velocity_momentum_step(params, grads, states, t, lr, mu):
    """``v ← μv − αg;  θ ← θ + v`` with ``v₀ = 0``."""
    out = []
    for p, g, s in zip(params, grads, states):
        s["v"] = mu * _zeros(s, "v", p) - lr * g
        out.append(p + s["v"])
    return out


def ema_momentum_step(params, grads, states, t, lr, beta):
    """``v ← βv + (1−β)g;  θ ← θ − αv`` with ``v₀ = 0``."""
    out = []
    for p, g, s in zip(params, grads, states):
        s["v"] = beta * _zeros(s, "v", p) + (1 - beta) * g
        out.append(p - lr * s["v"])
    return out


def nesterov_reformulated_step(params, grads, states, t, lr, mu):
    """``v_new ← μv − αg;  θ ← θ − μv + (1+μ)v_new`` (Bengio et al. 2013, eq. 7)."""
    out = []
    for p, g, s in zip(params, grads, states):
        v_prev = _zeros(s, "v", p)
        s["v"] = mu * v_prev - lr * g
        out.append(p - mu * v_prev + (1 + mu) * s["v"])
    return out


def nesterov_lookahead_step(params, grads, states, t, lr, beta):
    """``v_{t+1} ← βv_t + (1−β)g;  θ ← θ − α(βv_{t+1} + (1−β)g)``."""
    out = []
    for p, g, s in zip(params, grads, states):
        s["v"] = beta * _zeros(s, "v", p) + (1 - beta) * g
        out.append(p - lr * (beta * s["v"] + (1 - beta) * g))
    return out


def adagrad_step(params, grads, states, t, lr, lr_decay=0.0, eps=1e-10, initial=0.0):
    out = []
    for p, g, s in zip(params, grads, states):
        s.setdefault("s", torch.full_like(p, initial))
        s["s"] = s["s"] + g * g
        out.append(p - lr / (1 + (t - 1) * lr_decay) * g / (torch.sqrt(s["s"]) + eps))
    return out


def rmsprop_step(params, grads, states, t, lr, gamma=0.99, eps=1e-8, momentum=0.0, centered=False):
    out = []
    for p, g, s in zip(params, grads, states):
        s["s"] = gamma * _zeros(s, "s", p) + (1 - gamma) * g * g
        mean_square = s["s"]
        if centered:
            s["mean"] = gamma * _zeros(s, "mean", p) + (1 - gamma) * g
            mean_square = mean_square - s["mean"] ** 2
        direction = g / (torch.sqrt(mean_square) + eps)
        if momentum:
            s["b"] = momentum * _zeros(s, "b", p) + direction
            direction = s["b"]
        out.append(p - lr * direction)
    return out


def adadelta_step(params, grads, states, t, lr=1.0, rho=0.9, eps=1e-6):
    """Zeiler 2012, Algorithm 1."""
    out = []
    for p, g, s in zip(params, grads, states):
        s["Eg2"] = rho * _zeros(s, "Eg2", p) + (1 - rho) * g * g
        delta = torch.sqrt(_zeros(s, "Edx2", p) + eps) / torch.sqrt(s["Eg2"] + eps) * g
        s["Edx2"] = rho * s["Edx2"] + (1 - rho) * delta * delta
        out.append(p - lr * delta)
    return out


def adam_step(
    params, grads, states, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0, decoupled=0.0,
    bias_correction=True, amsgrad=False,
):
    """Kingma & Ba, Algorithm 1; ``l2`` adds ``λθ`` to g, ``decoupled`` is AdamW's ``θ(1−αλ)``."""
    out = []
    for p, g, s in zip(params, grads, states):
        g = g + l2 * p
        s["m"] = beta1 * _zeros(s, "m", p) + (1 - beta1) * g
        s["v"] = beta2 * _zeros(s, "v", p) + (1 - beta2) * g * g
        v = s["v"]
        if amsgrad:  # torch.optim's AMSGrad: the running max of v, then the correction
            s["vmax"] = torch.maximum(s.get("vmax", v), v)
            v = s["vmax"]
        m_hat, v_hat = s["m"], v
        if bias_correction:
            m_hat = m_hat / (1 - beta1**t)
            v_hat = v_hat / (1 - beta2**t)
        out.append(p * (1 - lr * decoupled) - lr * m_hat / (torch.sqrt(v_hat) + eps))
    return out


def _rms(x):
    return math.sqrt(float((x * x).mean())) if x.numel() else 0.0


def _factored_inverse_sqrt(g2, state, beta2):
    """Shazeer & Stern, Alg. 4 with sums, one matrix at a time: V̂ = R Cᵀ / 1ᵀR."""
    n, m = g2.shape[-2:]
    slices = g2.reshape(-1, n, m)
    rows = state.setdefault("R", torch.zeros(slices.shape[0], n, dtype=g2.dtype))
    cols = state.setdefault("C", torch.zeros(slices.shape[0], m, dtype=g2.dtype))
    out = torch.empty_like(slices)
    for k in range(slices.shape[0]):
        rows[k] = beta2 * rows[k] + (1 - beta2) * slices[k].sum(dim=1)
        cols[k] = beta2 * cols[k] + (1 - beta2) * slices[k].sum(dim=0)
        v_hat = torch.outer(rows[k], cols[k]) / rows[k].sum()
        out[k] = 1 / torch.sqrt(v_hat)
    return out.reshape(g2.shape)


def adafactor_step(
    params, grads, states, t, lr=None, eps1=1e-30, eps2=1e-3, d=1.0, decay_rate=-0.8, beta1=None,
    weight_decay=0.0, scale_parameter=True, warmup_init=False,
):
    """Shazeer & Stern 2018 (Alg. 4/5 + update clipping, relative step, optional first moment)."""
    out = []
    beta2 = 1 - t**decay_rate
    for p, g, s in zip(params, grads, states):
        g2 = g * g + eps1
        if p.dim() >= 2:
            inverse_sqrt_v = _factored_inverse_sqrt(g2, s, beta2)
        else:
            s["V"] = beta2 * _zeros(s, "V", p) + (1 - beta2) * g2
            inverse_sqrt_v = 1 / torch.sqrt(s["V"])
        u = g * inverse_sqrt_v
        u = u / max(1.0, _rms(u) / d)
        rho = lr if lr is not None else min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t))
        alpha = max(eps2, _rms(p)) * rho if scale_parameter else rho
        step = alpha * u
        if beta1 is not None:
            s["m"] = beta1 * _zeros(s, "m", p) + (1 - beta1) * step
            step = s["m"]
        out.append(p - step - alpha * weight_decay * p)
    return out


def lion_step(params, grads, states, t, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    """Chen et al. 2023, Alg. 2: c = β₁m + (1−β₁)g; θ ← θ − α(sign(c) + λθ); m ← β₂m + (1−β₂)g."""
    out = []
    for p, g, s in zip(params, grads, states):
        m = _zeros(s, "m", p)
        c = beta1 * m + (1 - beta1) * g
        s["m"] = beta2 * m + (1 - beta2) * g
        out.append(p - lr * (torch.sign(c) + weight_decay * p))
    return out


def nadam_step(params, grads, states, t, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0, decoupled=0.0,
               momentum_decay=4e-3):
    """Dozat 2016 with the momentum schedule μ_t = β₁(1 − ½·0.96^{tψ}) and Π_t = ∏ μ_i (kept as a float):
    θ ← θ − α[(1−μ_t)/(1−Π_t)·g + μ_{t+1}/(1−Π_{t+1})·m] / (√(v/(1−β₂ᵗ)) + ε)."""
    def mu(step):
        return beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))

    out = []
    for p, g, s in zip(params, grads, states):
        g = g + l2 * p
        s["product"] = s.get("product", 1.0) * mu(t)
        s["m"] = beta1 * _zeros(s, "m", p) + (1 - beta1) * g
        s["v"] = beta2 * _zeros(s, "v", p) + (1 - beta2) * g * g
        v_hat = s["v"] / (1 - beta2**t)
        direction = (1 - mu(t)) / (1 - s["product"]) * g + mu(t + 1) / (1 - s["product"] * mu(t + 1)) * s["m"]
        out.append(p * (1 - lr * decoupled) - lr * direction / (torch.sqrt(v_hat) + eps))
    return out


def radam_step(params, grads, states, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0, decoupled=0.0):
    """Liu et al. 2020, Alg. 2: the adaptive step rectified by r_t where ρ_t > 5, momentum SGD before."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    out = []
    for p, g, s in zip(params, grads, states):
        g = g + l2 * p
        s["m"] = beta1 * _zeros(s, "m", p) + (1 - beta1) * g
        s["v"] = beta2 * _zeros(s, "v", p) + (1 - beta2) * g * g
        m_hat = s["m"] / (1 - beta1**t)
        if rho_t > 5:
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            l_t = math.sqrt(1 - beta2**t) / (torch.sqrt(s["v"]) + eps)
            step = r * m_hat * l_t
        else:
            step = m_hat
        out.append(p * (1 - lr * decoupled) - lr * step)
    return out


def adamax_step(params, grads, states, t, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0):
    """Kingma & Ba 2015, Alg. 2 (ε inside the max, as torch.optim.Adamax): ``u ← max(β₂u, |g| + ε)``,
    ``θ ← θ − α/(1−β₁ᵗ)·m/u``."""
    out = []
    for p, g, s in zip(params, grads, states):
        g = g + l2 * p
        s["m"] = beta1 * _zeros(s, "m", p) + (1 - beta1) * g
        s["u"] = torch.maximum(beta2 * _zeros(s, "u", p), g.abs() + eps)
        out.append(p - lr / (1 - beta1**t) * s["m"] / s["u"])
    return out


def _float32(x):
    return float(torch.tensor(x, dtype=torch.float32))


def asgd_step(params, grads, states, t, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, l2=0.0):
    """Polyak & Juditsky averaging with torch.optim.ASGD's schedule: ``θ ← θ(1−λη) − ηg``, the average
    ``ā ← ā + μ(θ − ā)`` (``ā ← θ`` while μ = 1), then ``η ← lr/(1 + λ·lr·t)^α``, ``μ ← 1/max(1, t − t₀)``;
    η and μ kept in float32, as torch keeps them.  The average is ``states[i]["ax"]``."""
    out = []
    for p, g, s in zip(params, grads, states):
        eta, mu = s.get("eta", _float32(lr)), s.get("mu", 1.0)
        p = p * (1 - lambd * eta) - eta * (g + l2 * p)
        s["ax"] = p.clone() if mu == 1 else s["ax"] + mu * (p - s["ax"])
        s["eta"] = _float32(lr / (1 + lambd * lr * t) ** alpha)
        s["mu"] = _float32(1 / max(1, t - t0))
        out.append(p)
    return out


def rprop_step(params, grads, states, t, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50)):
    """Riedmiller & Braun 1993 without weight-backtracking (torch.optim.Rprop), element by element: the step
    size grows by η₊ while the gradient keeps its sign, shrinks by η₋ when it flips (and that step is
    skipped, the flipped gradient forgotten), within [min, max]; ``θ ← θ − s·sign(g)``."""
    out = []
    for p, g, s in zip(params, grads, states):
        size, prev = s.setdefault("size", torch.full_like(p, lr)), _zeros(s, "prev", p)
        new_p, new_size, new_prev = p.clone().reshape(-1), size.clone().reshape(-1), g.clone().reshape(-1)
        for i, (gi, previous, si) in enumerate(zip(g.reshape(-1).tolist(), prev.reshape(-1).tolist(),
                                                  size.reshape(-1).tolist())):
            if gi * previous > 0:
                si = min(max(si * etas[1], step_sizes[0]), step_sizes[1])
            elif gi * previous < 0:
                si, gi = min(max(si * etas[0], step_sizes[0]), step_sizes[1]), 0.0
            else:
                si = min(max(si, step_sizes[0]), step_sizes[1])
            new_size[i], new_prev[i] = si, gi
            new_p[i] = new_p[i] - si * ((gi > 0) - (gi < 0))
        s["size"], s["prev"] = new_size.reshape(p.shape), new_prev.reshape(p.shape)
        out.append(new_p.reshape(p.shape))
    return out


def sparse_adam_step(params, grads, states, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam on the rows a sparse gradient names (torch.optim.SparseAdam), with the bias corrections in the step
    size: ``θ_r ← θ_r − α√(1−β₂ᵗ)/(1−β₁ᵗ)·m_r/(√v_r + ε)`` for each named row ``r``; other rows stay."""
    out = []
    for p, g, s in zip(params, grads, states):
        m, v, p = _zeros(s, "m", p), _zeros(s, "v", p), p.clone()
        g = g.coalesce()
        rows = tuple(g.indices())
        m[rows] = beta1 * m[rows] + (1 - beta1) * g.values()
        v[rows] = beta2 * v[rows] + (1 - beta2) * g.values() ** 2
        p[rows] -= lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m[rows] / (v[rows].sqrt() + eps)
        out.append(p)
    return out


def _trust_ratio(update, param, trust_coefficient=1.0, eps=0.0):
    """optax's ``scale_by_trust_ratio``: ``κ‖θ‖/(‖u‖+ε)``, 1 where either norm is 0 (NaN stays NaN)."""
    param_norm, update_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(update)
    ratio = trust_coefficient * param_norm / (update_norm + eps)
    zero = (param_norm == 0) | (update_norm == 0)
    return torch.where(zero, torch.ones_like(ratio), ratio)


def lamb_step(params, grads, states, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
    """``optax.lamb``: ``chain(scale_by_adam(b1, b2, eps), add_decayed_weights(wd), scale_by_trust_ratio(),
    scale_by_learning_rate(lr))``, each line as optax writes it."""
    out = []
    for p, g, s in zip(params, grads, states):
        s["mu"] = (1 - beta1) * g + beta1 * _zeros(s, "mu", p)
        s["nu"] = (1 - beta2) * g**2 + beta2 * _zeros(s, "nu", p)
        mu_hat, nu_hat = s["mu"] / (1 - beta1**t), s["nu"] / (1 - beta2**t)
        update = mu_hat / (torch.sqrt(nu_hat) + eps)
        if weight_decay:
            update = update + weight_decay * p
        update = update * _trust_ratio(update, p)
        out.append(p + update * -lr)
    return out


def lars_step(params, grads, states, t, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
              nesterov=False):
    """``optax.lars``: ``chain(add_decayed_weights(wd), scale_by_trust_ratio(κ, ε), scale_by_learning_rate(lr),
    trace(momentum, nesterov))``: the momentum trace is of the scaled step."""
    out = []
    for p, g, s in zip(params, grads, states):
        update = g + weight_decay * p if weight_decay else g
        update = update * _trust_ratio(update, p, trust_coefficient, eps)
        update = update * -lr
        s["trace"] = update + momentum * _zeros(s, "trace", p)
        out.append(p + (update + momentum * s["trace"] if nesterov else s["trace"]))
    return out


def clip_by_global_norm(grads, max_norm):
    """``torch.nn.utils.clip_grad_norm_`` written out: ``g ← g·min(1, c/(‖g‖+10⁻⁶))``, ``‖g‖`` over all tensors."""
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    factor = min(1.0, max_norm / (total + 1e-6)) if total == total else math.nan
    return [g * factor for g in grads], total




def muon_step(params, grads, states, t, lr=1e-3, momentum=0.95, nesterov=True, weight_decay=0.1,
              coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=1e-7, adjust="original"):
    """Keller Jordan's Muon (kellerjordan.github.io/posts/muon, the EMA form torch adopts): b ← μb + (1−μ)g;
    u = μb + (1−μ)g with Nesterov, else b; X₀ = u/‖u‖_F (on uᵀ if tall), X ← aX + (bA + cA²)X with A = XXᵀ;
    θ ← θ(1 − αλ) − α·r·X, r = √max(1, rows/cols), or 0.2·√max(rows, cols) to match AdamW's RMS.  Exact
    arithmetic of the parameter's dtype throughout (no bfloat16)."""
    a, b, c = coefficients
    out = []
    for p, g, s in zip(params, grads, states):
        m = _zeros(s, "m", p)
        s["m"] = m = momentum * m + (1 - momentum) * g
        u = momentum * m + (1 - momentum) * g if nesterov else m
        rows, cols = u.shape
        x = u.T if rows > cols else u
        x = x / max(float(torch.linalg.norm(x)), eps)
        for _ in range(ns_steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if rows > cols else x
        ratio = max(1.0, rows / cols) ** 0.5 if adjust == "original" else 0.2 * max(rows, cols) ** 0.5
        out.append(p * (1 - lr * weight_decay) - lr * ratio * x)
    return out


def run_reference(step_fn, params, loss_fn, steps, maximize=False, **hyper):
    """Plain training loop: autograd gradient at the current point, then ``step_fn``."""
    params = [p.detach().clone() for p in params]
    states = [dict() for _ in params]
    for t in range(1, steps + 1):
        params = [p.detach().requires_grad_() for p in params]
        loss = loss_fn(params)
        grads = torch.autograd.grad(-loss if maximize else loss, params)
        with torch.no_grad():
            params = step_fn(params, grads, states, t, **hyper)
    return [p.detach() for p in params]


def run_sam_reference(step_fn, params, loss_fn, steps, rho, adaptive=False, **hyper):
    """SAM: gradient at θ + ρ·T²g/‖Tg‖ (T = |θ| if adaptive else 1), base step at θ."""
    params = [p.detach().clone() for p in params]
    states = [dict() for _ in params]
    for t in range(1, steps + 1):
        params = [p.detach().requires_grad_() for p in params]
        grads = torch.autograd.grad(loss_fn(params), params)
        with torch.no_grad():
            scale = [p.abs() if adaptive else torch.ones_like(p) for p in params]
            norm = math.sqrt(sum(float(((w * g) ** 2).sum()) for w, g in zip(scale, grads)))
            perturbed = [(p + rho * w * w * g / (norm + 1e-12)).requires_grad_() for p, w, g in zip(params, scale, grads)]
        sam_grads = torch.autograd.grad(loss_fn(perturbed), perturbed)
        with torch.no_grad():
            params = step_fn(params, sam_grads, states, t, **hyper)
    return [p.detach() for p in params]
