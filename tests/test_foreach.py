"""The multi-tensor reference path (foreach, torch's ``_foreach_*`` ops; the path CUDA takes) against
the per-parameter reference chain (foreach=False)."""
from __future__ import annotations

import pytest
import torch

import descend
from conftest import make_params, nonconvex_loss
from test_fused import CONFIGS

STEPS = 12


def trajectory(cls, kwargs, dtype, foreach):
    params = [p.clone().requires_grad_() for p in make_params(dtype)]
    optimizer = cls(params, fused=False, foreach=foreach, **kwargs)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nonconvex_loss(params).backward()
        optimizer.step()
    state = [v for p in params for _, v in sorted(optimizer.state[p].items())]
    return [p.detach() for p in params], state


@pytest.mark.parametrize("name", CONFIGS)
def test_foreach_equals_the_per_parameter_chain_bit_for_bit(name):
    # on the CPU each float32 _foreach_ op runs the per-tensor op it stands for: the paths agree exactly
    cls, kwargs = CONFIGS[name]
    params, state = trajectory(cls, kwargs, torch.float32, foreach=True)
    expected_params, expected_state = trajectory(cls, kwargs, torch.float32, foreach=False)
    assert len(state) == len(expected_state)
    for got, want in zip(params + state, expected_params + expected_state):
        assert torch.equal(got, want), (got, want)


@pytest.mark.parametrize("name", CONFIGS)
def test_foreach_in_bfloat16_stays_within_its_rounding(name):
    # _foreach_mul_ rounds its scalar to bfloat16 first, Tensor.mul_ does not: a last-bit difference
    cls, kwargs = CONFIGS[name]
    params, _ = trajectory(cls, kwargs, torch.bfloat16, foreach=True)
    expected, _ = trajectory(cls, kwargs, torch.bfloat16, foreach=False)
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def test_foreach_takes_a_group_in_one_list_per_dtype_and_chunks_by_the_largest_parameter(monkeypatch):
    from descend.backends import eager

    monkeypatch.setattr(eager, "CHUNK_ELEMENTS", 16)
    sizes = [(40,), (10,), (10,), (30,), (5,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in sizes] + [torch.nn.Parameter(torch.randn(7, dtype=torch.float64))]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = descend.Adam(params, fused=False, foreach=True)
    chunks = []
    real = eager._update_chunk

    def spy(work, indices):
        chunks.append([work.params[i].numel() for i in indices])
        return real(work, indices)

    monkeypatch.setattr(eager, "_update_chunk", spy)
    optimizer.step()
    assert chunks == [[40], [10, 10], [30, 5], [7]]  # no chunk holds more than the largest parameter (40)
    assert all(float(optimizer.state[p]["step"]) == 1 for p in params)


@pytest.mark.parametrize("bad", [dict(foreach="yes"), dict(fused=True, foreach=True)])
def test_foreach_flag_is_checked(bad):
    with pytest.raises(ValueError, match="foreach"):
        descend.SGD([torch.nn.Parameter(torch.zeros(2))], **bad)


def test_foreach_path_applies_the_nonfinite_policy():
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    param.grad = torch.tensor([1.0, float("nan"), 1.0], dtype=torch.bfloat16)
    with pytest.raises(FloatingPointError):
        descend.Adam([param], foreach=True).step()
    assert torch.isnan(param[1])  # applied, then raised
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    param.grad = torch.tensor([1.0, float("nan"), 1.0], dtype=torch.bfloat16)
    optimizer = descend.Adam([param], nonfinite="skip", foreach=True)
    optimizer.step()
    assert optimizer.skipped_steps == 1 and torch.equal(param, torch.ones(3, dtype=torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CONFIGS)
def test_cuda_matches_the_cpu_reference(name):
    cls, kwargs = CONFIGS[name]
    cpu = [p.clone().requires_grad_() for p in make_params(torch.float64)]
    cuda = [p.detach().cuda().requires_grad_() for p in cpu]
    optimizers = [cls(cpu, fused=False, foreach=False, **kwargs), cls(cuda, **kwargs)]
    for _ in range(STEPS):
        for params, optimizer in zip((cpu, cuda), optimizers):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()
    for a, b in zip(cpu, cuda):
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=1e-9, atol=1e-10)


def test_foreach_default_follows_torch_lists_on_cuda_one_at_a_time_on_cpu():
    from descend.adapter.routing import FOREACH_DEVICES, takes_foreach

    group = dict(foreach=None)
    assert not takes_foreach(group, torch.zeros(1))
    assert takes_foreach(group, torch.zeros(1, device="meta")) is False
    assert takes_foreach(dict(foreach=True), torch.zeros(1))
    assert "cuda" in FOREACH_DEVICES


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("cls, kwargs", [(descend.Adam, {}), (descend.SGD, dict(lr=0.1, momentum=0.9)),
                                         (descend.RMSprop, dict(centered=True))])
def test_the_reference_path_runs_big_tensors_slice_by_slice_to_the_same_bits(cls, kwargs, state_dtype, monkeypatch):
    """A big parameter's elementwise chain runs on slices (temporaries of one slice, not of the tensor); the
    slices' stochastic rounding takes their elements' offsets, so the bits are the unsliced run's and the
    kernel's."""
    from descend.backends import eager

    def run(slice_elements, **flags):
        monkeypatch.setattr(eager, "SLICE_ELEMENTS", slice_elements)
        param = torch.nn.Parameter(torch.randn(37, 29, generator=torch.Generator().manual_seed(0)))
        optimizer = cls([param], state_dtype=state_dtype, **kwargs, **flags)
        for step in range(4):
            param.grad = torch.randn(37, 29, generator=torch.Generator().manual_seed(step + 1))
            optimizer.step()
        return [param.detach()] + [v for k, v in sorted(optimizer.state[param].items()) if k != "step"]

    whole, sliced, kernel = run(1 << 20, fused=False), run(100, fused=False), run(100)
    for a, b, c in zip(whole, sliced, kernel):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.float(), c.float(), rtol=2**-7 if a.dtype == torch.bfloat16 else 1e-6, atol=1e-7)


def test_foreach_with_16_bit_parameters_adds_in_float32_and_rounds_once(monkeypatch):
    """No mixed-dtype in-place add on the list path: float32 sum, then one rounding copy into the parameter
    (the same numbers as the one-tensor path)."""
    calls = []
    real = torch._foreach_add_

    def spy(tensors, others, *args, **kwargs):
        if isinstance(others, (list, tuple)) and others and isinstance(others[0], torch.Tensor):
            calls.append({t.dtype for t in tensors} | {o.dtype for o in others})
        return real(tensors, others, *args, **kwargs)

    params, _ = trajectory(descend.Adam, dict(lr=0.01), torch.bfloat16, foreach=False)
    monkeypatch.setattr(torch, "_foreach_add_", spy)
    listed, _ = trajectory(descend.Adam, dict(lr=0.01), torch.bfloat16, foreach=True)
    assert calls and all(len(dtypes) == 1 for dtypes in calls), calls
    for a, b in zip(params, listed):
        torch.testing.assert_close(a.float(), b.float(), rtol=2**-7, atol=1e-6)
