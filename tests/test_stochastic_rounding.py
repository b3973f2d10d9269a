"""Stochastic rounding of bfloat16 state: one hash per element and update, shared by all the element's entries
(lanes 0 and 1 take its low and high halves, lanes 2p and 2p+1 those of one cheap further mix), the same bits
on the reference path and in the kernels, for any thread count and slicing, and still unbiased and
uncorrelated between entries and steps."""
from __future__ import annotations

import pytest
import torch

import descend
from descend.backends import cpu
from descend.plan import state

N = 1 << 16
LANES = range(6)


def rounded_up(fraction: float, lane: int, step: int = 1, offset: int = 0, n: int = N) -> torch.Tensor:
    """Whether each of ``n`` copies of 1 + fraction·ulp rounds up, drawn for entry ``lane`` at ``step``."""
    ulp = 2.0**-7
    value = torch.full((n,), 1.0 + fraction * ulp)
    like = torch.empty(n, dtype=torch.bfloat16)
    return state.stochastic_bfloat16(value, like, step, lane, offset) > 1.0


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("fraction", [0.001, 0.25, 0.5, 0.9])
def test_every_entry_rounds_up_with_probability_equal_to_the_dropped_fraction(lane, fraction):
    up = rounded_up(fraction, lane).double().mean().item()
    sigma = (fraction * (1 - fraction) / N) ** 0.5
    assert abs(up - fraction) <= 5 * sigma + 2.0**-16, (lane, fraction, up)  # 16 bits: resolution 2^-16


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return (a * b).sum().item() / ((a * a).sum() * (b * b).sum()).sqrt().item()


@pytest.mark.parametrize("first, second", [(0, 1), (0, 2), (1, 2), (2, 3), (1, 3), (0, 4), (3, 5)])
def test_entries_sharing_one_hash_round_independently(first, second):
    assert abs(correlation(rounded_up(0.5, first), rounded_up(0.5, second))) < 5 / N**0.5


@pytest.mark.parametrize("lane", [0, 1, 2, 3])
def test_each_step_draws_new_bits_and_neighbours_differ(lane):
    assert abs(correlation(rounded_up(0.5, lane, step=7), rounded_up(0.5, lane, step=8))) < 5 / N**0.5
    up = rounded_up(0.5, lane)
    assert abs(correlation(up[:-1], up[1:])) < 5 / N**0.5


@pytest.mark.parametrize("lane", LANES)
def test_a_slice_draws_the_bits_of_its_elements_in_the_whole(lane):
    """The reference path stores big tensors slice by slice with each slice's element offset."""
    whole = rounded_up(0.5, lane, step=3)
    parts = torch.cat([rounded_up(0.5, lane, step=3, offset=0, n=1000),
                       rounded_up(0.5, lane, step=3, offset=1000, n=N - 1000)])
    assert torch.equal(whole, parts)


def test_lanes_two_and_up_come_from_the_one_hash():
    """Lane ``k`` adds 16 bits of the element's one draw below the kept bits: a float whose dropped bits are
    ``L`` rounds up exactly where those 16 bits are at least 65536 − L."""
    drawn = state.random_bits(torch.arange(N, dtype=torch.int64), state.seed(5))
    for lane in LANES:
        noise = ((state.more_bits(drawn, lane // 2) if lane >= 2 else drawn) >> (16 * (lane % 2))) & 0xFFFF
        for dropped in (1, 0x4000, 0x8000, 0xC000, 0xFFFF):
            value = torch.full((N,), 0x3F800000 | dropped, dtype=torch.int32).view(torch.float32)
            up = state.stochastic_bfloat16(value, torch.empty(N, dtype=torch.bfloat16), 5, lane) > 1.0
            assert torch.equal(up, noise >= 65536 - dropped), (lane, dropped)


needs_compiler = pytest.mark.skipif(not cpu.available(), reason="no C compiler")


def trained(cls, kwargs, fused, threads=None, steps=3):
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(1000,), (70001,), (3,)]]
    optimizer = cls(params, state_dtype=torch.bfloat16, fused=fused, **kwargs)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        for _ in range(steps):
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
    finally:
        torch.set_num_threads(previous)
    return {(i, key): value for i, param in enumerate(params) for key, value in optimizer.state[param].items()
            if torch.is_tensor(value) and value.dtype == torch.bfloat16}


THREE_ENTRIES = {"AdamW-amsgrad": (descend.AdamW, dict(lr=0.01, amsgrad=True)),  # lanes 0, 1, 2
                 "RMSprop-centered": (descend.RMSprop, dict(lr=0.01, centered=True))}


@needs_compiler
@pytest.mark.parametrize("name", sorted(THREE_ENTRIES))
def test_the_kernel_draws_the_reference_paths_bits_for_every_entry(name):
    cls, kwargs = THREE_ENTRIES[name]
    kernel, reference = trained(cls, kwargs, None), trained(cls, kwargs, False)
    assert len(kernel) == len(reference) >= 6
    for key in reference:
        assert torch.equal(kernel[key], reference[key]), key


@needs_compiler
def test_the_kernels_bits_do_not_depend_on_the_thread_count():
    cls, kwargs = THREE_ENTRIES["AdamW-amsgrad"]
    one, two = trained(cls, kwargs, None, threads=1), trained(cls, kwargs, None, threads=2)
    assert all(torch.equal(one[key], two[key]) for key in one)
