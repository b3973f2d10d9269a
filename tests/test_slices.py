"""The reference chain on a big parameter, slice by slice, with its temporaries in recycled buffers
(descend.backends.recycle): the same bits as on the whole tensor, and temporaries of a few slices."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import descend
from descend.backends import eager
from descend.backends.recycle import Recycling
from test_fused import CONFIGS

MORE = {
    "lamb": (descend.LAMB, dict(lr=0.01, weight_decay=0.1)),
    "lars": (descend.LARS, dict(lr=0.01, momentum=0.9)),
    "sgd-schedulefree": (descend.SGDScheduleFree, dict(lr=0.05, warmup_steps=2)),
    "adamw-schedulefree": (descend.AdamWScheduleFree, dict(lr=0.01, warmup_steps=2, weight_decay=0.1)),
}
SHAPE = (37, 29)  # 1073 elements: ten slices of 100 and a last one of 73


def run(cls, kwargs, slice_elements, monkeypatch, dtype=torch.float32, steps=4, **flags):
    monkeypatch.setattr(eager, "SLICE_ELEMENTS", slice_elements)
    param = torch.nn.Parameter(torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype))
    optimizer = cls([param], fused=False, **kwargs, **flags)
    if hasattr(optimizer, "train"):  # schedule-free: the training sequence
        optimizer.train()
    for step in range(steps):
        param.grad = torch.randn(SHAPE, generator=torch.Generator().manual_seed(step + 1)).to(dtype)
        optimizer.step()
    return [param.detach()] + [v for _, v in sorted(optimizer.state[param].items()) if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("name", list(CONFIGS) + list(MORE))
def test_a_sliced_step_in_recycled_buffers_gives_the_whole_tensors_bits(name, monkeypatch):
    cls, kwargs = {**CONFIGS, **MORE}[name]
    whole, sliced = run(cls, kwargs, 1 << 20, monkeypatch), run(cls, kwargs, 100, monkeypatch)
    assert len(whole) == len(sliced)
    for a, b in zip(whole, sliced):
        assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit()), name


@pytest.mark.parametrize("dtype, state_dtype", [(torch.bfloat16, None), (torch.float16, None),
                                                (torch.float32, torch.bfloat16), (torch.float64, None)])
@pytest.mark.parametrize("name", ["adam-l2-amsgrad", "rmsprop-centered-momentum", "nadam", "radam", "lion"])
def test_sliced_16_bit_and_float64_steps_keep_their_bits(name, dtype, state_dtype, monkeypatch):
    cls, kwargs = CONFIGS[name]
    flags = dict(state_dtype=state_dtype)
    whole = run(cls, kwargs, 1 << 20, monkeypatch, dtype, **flags)
    sliced = run(cls, kwargs, 100, monkeypatch, dtype, **flags)
    for a, b in zip(whole, sliced):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", ["adam", "momentum-velocity"])
def test_the_list_path_takes_big_parameters_slice_by_slice_to_the_same_bits(name, monkeypatch):
    cls, kwargs = CONFIGS[name]
    listed = run(cls, kwargs, 100, monkeypatch, foreach=True)
    for a, b in zip(listed, run(cls, kwargs, 1 << 20, monkeypatch, foreach=False)):
        assert torch.equal(a, b), name


class Allocations(TorchDispatchMode):
    """Counts the bytes of the tensors aten ops make (not views, not in-place or ``out=`` results)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        given = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                 if isinstance(t, torch.Tensor)}
        for out in torch.utils._pytree.tree_leaves(result):
            if isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() not in given:
                self.bytes += out.untyped_storage().nbytes()
        return result


@pytest.mark.parametrize("cls, kwargs, slices", [(descend.Adam, dict(weight_decay=0.1, amsgrad=True), 8),
                                                 (descend.SGD, dict(momentum=0.9, nesterov=True), 8),
                                                 (descend.RMSprop, dict(centered=True, momentum=0.5), 8),
                                                 (descend.Adam, dict(state_dtype=torch.bfloat16), 24)])
@pytest.mark.parametrize("foreach", [False, True])
def test_a_reference_step_on_a_big_parameter_allocates_a_few_slices_not_the_parameter(cls, kwargs, slices, foreach,
                                                                                      monkeypatch):
    """A parameter of 64 float32 slices: every tensor one step makes, added up, is at most 8 slices' worth (an
    eighth of the parameter), 24 with stochastic rounding (its int64 hash of the element offsets); a chain on
    the whole tensor, or one allocating per slice, makes several parameter-sized temporaries."""
    monkeypatch.setattr(eager, "SLICE_ELEMENTS", 1 << 12)
    elements = 64 << 12
    param = torch.nn.Parameter(torch.zeros(elements))
    param.grad = torch.full((elements,), 0.5)
    optimizer = cls([param], lr=1e-3, fused=False, foreach=foreach, **kwargs)
    optimizer.step()  # makes the state
    with Allocations() as counted:
        optimizer.step()
    assert counted.bytes <= slices * 4 << 12, counted.bytes / (4 << 12)
    assert torch.isfinite(param).all() and param[0] < 0


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("where", [0, 150, 1072])
def test_a_nan_in_any_slice_of_a_big_gradient_raises_after_the_step(foreach, where, monkeypatch):
    """The gradient of a sliced parameter is checked slice by slice: a NaN in the first, a middle or the
    last (short) slice raises FloatingPointError, after the step, as on the whole tensor."""
    monkeypatch.setattr(eager, "SLICE_ELEMENTS", 100)
    param = torch.nn.Parameter(torch.zeros(SHAPE))
    small = torch.nn.Parameter(torch.zeros(3))
    param.grad, small.grad = torch.ones(SHAPE), torch.ones(3)
    param.grad.view(-1)[where] = float("nan")
    optimizer = descend.Adam([param, small], fused=False, foreach=foreach)
    with pytest.raises(FloatingPointError):
        optimizer.step()
    assert torch.isnan(param.view(-1)[where]) and (small < 0).all()  # applied, then raised
    param.grad.view(-1)[where] = 1.0
    small.grad[1] = float("inf")
    with pytest.raises(FloatingPointError):
        optimizer.step()
    fresh = torch.nn.Parameter(torch.zeros(SHAPE))
    fresh.grad = torch.ones(SHAPE)
    descend.Adam([fresh], fused=False, foreach=foreach).step()  # finite: no error


def test_recycled_buffers_are_taken_only_when_nothing_holds_them():
    """A result kept past its slice, or a view of one, keeps its memory: the next results go elsewhere."""
    x = torch.arange(8.0)
    with torch.no_grad(), Recycling(8, x.device) as buffers:
        buffers.next_slice(8)
        kept = x * 2.0
        view = (x + 1.0)[2:]
        dropped = x - 1.0
        del dropped
        buffers.next_slice(8)
        results = [x * 3.0, x * 4.0]  # the first takes the dropped one's buffer, the second a new one
        assert len(buffers.buffers) == 4
        buffers.next_slice(5)  # a last, shorter slice: views of the buffers
        assert (x[:5] * 5.0).shape == (5,)
    assert kept.tolist() == [2.0 * i for i in range(8)] and view.tolist() == [3.0 + i for i in range(6)]
    assert results[0].tolist() == [3.0 * i for i in range(8)] and results[1].tolist() == [4.0 * i for i in range(8)]
