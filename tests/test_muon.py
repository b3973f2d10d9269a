"""Muon against torch.optim.Muon (bit for bit on CPU float32, on every path), against the paper's reference,
and MuonWithAuxAdamW against torch.optim.Muon + torch.optim.AdamW.

The paths: one tensor at a time (``fused=False``), lists (``foreach=True``: the matrix step on a stack of
same-shape matrices), the generated C kernels (the default: one pass before the iteration, one after), and the
generated Triton kernels in Triton's interpreter.  The shapes include square, wide and tall matrices, several
of one shape (batched products above 16 rows and columns, one at a time below) and a 1 × n row.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from unittest import mock

import pytest
import torch
from torch import nn

import descend
from descend.backends import sharded
from descend.backends import triton as codegen_triton
from descend.steps import Elementwise, NewtonSchulz, lerp
from reference import muon_step, run_reference

SHAPES = [(16, 16), (16, 16), (24, 40), (24, 40), (40, 24), (40, 24), (12, 20), (48, 20), (1, 7), (9, 9)]
PATHS = {"reference": dict(fused=False), "foreach": dict(fused=False, foreach=True), "kernel": {}}
SETTINGS = {
    "defaults": {},
    "no nesterov": dict(nesterov=False),
    "original": dict(adjust_lr_fn="original", lr=0.02),
    "match_rms_adamw": dict(adjust_lr_fn="match_rms_adamw", lr=0.01),
    "no decay": dict(weight_decay=0.0),
    "decay, momentum 0.4": dict(weight_decay=0.3, momentum=0.4, lr=0.05),  # lerp weights >= 1/2 both ways
    "tensor lr": dict(lr=torch.tensor(0.01)),
    "ns": dict(ns_steps=7, ns_coefficients=(3.4, -4.7, 2.0), eps=1e-5),
}


def make_params(shapes=SHAPES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype).requires_grad_() for shape in shapes]


def train(optimizer, params, steps=20, first=0):
    for step in range(first, first + steps):
        g = torch.Generator().manual_seed(1000 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        optimizer.step()
    return [p.detach().clone() for p in params]


def fresh(kwargs):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def torch_muon(kwargs, dtype=torch.float32, steps=20):
    params = make_params(dtype=dtype)
    return train(torch.optim.Muon(params, **fresh(kwargs)), params, steps)


def assert_identical(got, want):
    for index, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"parameter {index} {tuple(g.shape)}: differs by {(g - w).abs().max().item():.3g}"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_float32_parameters_are_torchs_bit_for_bit_after_20_steps(setting, path):
    params = make_params()
    optimizer = descend.Muon(params, **fresh(SETTINGS[setting]), **PATHS[path])
    assert_identical(train(optimizer, params), torch_muon(SETTINGS[setting]))
    assert optimizer.kernel_info()[0].path == ("generated" if path == "kernel" else "reference")


@pytest.fixture
def interpreted(monkeypatch):
    """Triton's CPU interpreter, with CPU parameters sent to the Triton kernels (as tests/test_triton.py)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(codegen_triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(codegen_triton, "BLOCK", 16)
    monkeypatch.setattr(codegen_triton, "CHUNK", 32)
    launches = []
    real = codegen_triton.update
    monkeypatch.setattr(codegen_triton, "update", lambda work: launches.append(work) or real(work))
    return launches


@pytest.mark.parametrize("setting", ["defaults", "match_rms_adamw", "decay, momentum 0.4"])
def test_the_triton_kernels_in_the_interpreter_are_torchs_bit_for_bit(setting, interpreted):
    params = make_params()
    got = train(descend.Muon(params, **fresh(SETTINGS[setting])), params, steps=4)
    assert len(interpreted) == 4  # one Triton update per step: a kernel before the iteration, one after
    assert_identical(got, torch_muon(SETTINGS[setting], steps=4))


def test_float64_and_bfloat16_parameters_agree_on_every_path():
    for dtype, tolerance in ((torch.float64, 0.0), (torch.bfloat16, 0.0)):
        results = []
        for path in PATHS.values():
            params = make_params(dtype=dtype)
            results.append(train(descend.Muon(params, lr=0.02, **path), params, steps=5))
        for other in results[1:]:
            for a, b in zip(results[0], other):
                torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
    params = make_params(dtype=torch.float64)  # and float64 against torch, which iterates in bfloat16 as well
    got = train(descend.Muon(params, lr=0.02), params, steps=5)
    for a, b in zip(got, torch_muon(dict(lr=0.02), torch.float64, steps=5)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def loss(params):
    x = torch.linspace(-1, 1, 7 * 48, dtype=params[0].dtype).reshape(7, 48)
    return sum(((x[:, :p.shape[0]] @ torch.tanh(p)) ** 2).mean() for p in params)


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_equals_the_papers_muon_up_to_its_bfloat16_iteration(adjust, nesterov):
    """Keller Jordan's definition in exact float64 (tests/reference.py): descend's bfloat16 iteration moves each
    entry within a few thousandths of it over 5 steps of lr 0.02, while the steps themselves move ~0.1."""
    start = [p.detach().double() for p in make_params([(16, 16), (12, 20), (24, 8)])]
    kwargs = dict(lr=0.02, momentum=0.9, nesterov=nesterov, weight_decay=0.1)
    want = run_reference(muon_step, start, loss, 5, adjust=adjust, **kwargs)
    params = [p.clone().requires_grad_() for p in start]
    optimizer = descend.Muon(params, adjust_lr_fn=adjust, **kwargs)
    for _ in range(5):
        optimizer.zero_grad()
        loss(params).backward()
        optimizer.step()
    for p, w, s in zip(params, want, start):
        assert (w - s).abs().max() > 0.05
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=4e-3)


def test_the_iteration_drives_singular_values_towards_one_in_one_batched_product_per_shape():
    g = torch.Generator().manual_seed(3)
    stack = torch.randn(5, 24, 40, generator=g).bfloat16()
    step = NewtonSchulz()
    with mock.patch("torch.bmm", wraps=torch.bmm) as bmm, mock.patch("torch.baddbmm", wraps=torch.baddbmm) as baddbmm:
        out = step.apply(stack.clone(), None, {}, 1)
    assert bmm.call_count == 5 and baddbmm.call_count == 10  # ns_steps batched products for the 5 matrices
    singular = torch.linalg.svdvals(out.double())
    assert singular.min() > 0.6 and singular.max() < 1.25
    for k in range(5):  # the stack gives each matrix what it gives alone
        assert torch.equal(out[k], step.apply(stack[k:k + 1].clone(), None, {}, 1)[0])
    tall = stack.mT.contiguous()
    assert torch.equal(step.apply(tall.clone(), None, {}, 1), out.mT)


def test_momentum_buffer_is_the_only_state_and_checkpoints_load_both_ways():
    theirs_params = make_params()
    theirs = torch.optim.Muon(theirs_params, lr=0.02)
    train(theirs, theirs_params, steps=5)
    ours_params = [p.detach().clone().requires_grad_() for p in theirs_params]
    ours = descend.Muon(ours_params, lr=0.02)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert_identical(train(ours, ours_params, steps=5, first=5), train(theirs, theirs_params, steps=5, first=5))
    assert all(set(state) == {"momentum_buffer"} for state in ours.state_dict()["state"].values())
    back_params = [p.detach().clone().requires_grad_() for p in ours_params]
    back = torch.optim.Muon(back_params, lr=0.02)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert_identical(train(back, back_params, steps=5, first=10), train(ours, ours_params, steps=5, first=10))


def test_two_optimizers_of_one_structure_each_iterate_with_their_own_numbers():
    """The plan is cached by structure: the kernels' path must take each call's matrix step (ns_steps 3 and 7)."""
    for ns_steps in (3, 7):
        params = make_params()
        assert_identical(train(descend.Muon(params, ns_steps=ns_steps), params, steps=3),
                         torch_muon(dict(ns_steps=ns_steps), steps=3))


def test_errors_in_torchs_words():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters whereas we found a parameter with size"):
        descend.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="Number of steps must be less than 100 for computational efficiency"):
        descend.Muon(make_params(), ns_steps=100)
    with pytest.raises(ValueError, match="Adjust learning rate function arbitrary is not supported"):
        descend.Muon(make_params(), adjust_lr_fn="arbitrary")
    with pytest.raises(ValueError, match="Coefficients must be a tuple of exactly 3 values"):
        descend.Muon(make_params(), ns_coefficients=(1.0, 2.0))
    complex_param = torch.zeros(2, 3, dtype=torch.complex64, requires_grad=True)
    complex_param.grad = torch.ones_like(complex_param)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        descend.Muon([complex_param]).step()
    param = torch.zeros(2, 3, requires_grad=True)
    param.grad = torch.eye(2, 3).to_sparse()
    with pytest.raises(RuntimeError, match="Muon does not support sparse gradients"):
        descend.Muon([param]).step()
    params = make_params()
    optimizer = descend.Muon(params)
    optimizer.param_groups[0]["ns_steps"] = 150  # edited later: refused before anything moves
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        train(optimizer, params, steps=1)
    assert_identical([p.detach() for p in params], before) and not optimizer.state


@dataclass
class Lerp(Elementwise):
    """θ ← lerp(θ, g, w), returned as the new parameter itself."""

    output = "param"
    weight: float

    def formula(self, u, param, state, t):
        return lerp(param, u, self.weight)


@pytest.mark.parametrize("weight", [0.05, 0.3, 0.5, 0.6, 0.95, 1.7, -0.2])
def test_lerp_in_a_generated_kernel_rounds_as_torchs(weight):
    """torch.lerp takes its weight in float32: ``w − 1`` is ``f32(w) − 1``, not ``f32(w − 1)`` (0.6, 0.95)."""
    optimizer_class = descend.make_optimizer("LerpOnly", lambda group: [Lerp(group["weight"])], dict(weight=weight))
    g = torch.Generator().manual_seed(0)
    param = torch.randn(1003, generator=g).requires_grad_()
    param.grad = torch.randn(1003, generator=g)
    want = torch.lerp(param.detach(), param.grad, weight)
    optimizer = optimizer_class([param])
    optimizer.step()
    assert optimizer.kernel_info()[0].path == "generated"
    assert torch.equal(param.detach(), want)


# --- MuonWithAuxAdamW and muon_param_groups ------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self, tied=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(11, 16)
        self.hidden = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 16))
        self.norm = nn.LayerNorm(16)
        self.lm_head = nn.Linear(16, 11, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, tokens):
        return self.lm_head(self.norm(self.hidden(self.embed(tokens))))


def test_muon_param_groups_puts_hidden_matrices_in_muon_and_the_rest_in_adamw():
    model = Tiny()
    muon, adamw = descend.muon_param_groups(model, muon=dict(lr=0.02), adamw=dict(lr=3e-4))
    assert muon["use_muon"] and muon["lr"] == 0.02 and not adamw["use_muon"] and adamw["lr"] == 3e-4
    assert {id(p) for p in muon["params"]} == {id(model.hidden[0].weight), id(model.hidden[2].weight)}
    assert {id(p) for p in adamw["params"]} == {id(p) for p in model.parameters()} - {id(p) for p in muon["params"]}
    tied = Tiny(tied=True)
    groups = descend.muon_param_groups(tied, head="lm_head")
    assert sum(len(g["params"]) for g in groups) == len(list(tied.parameters()))  # the tied matrix once, in AdamW
    assert any(p is tied.embed.weight for p in groups[1]["params"])
    with pytest.raises(ValueError, match="no module named"):
        descend.muon_param_groups(tied, head="head")


def test_muon_with_aux_adamw_is_torchs_muon_and_adamw_with_their_defaults():
    model, twin = Tiny(), Tiny()
    tokens = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(1))
    groups = descend.muon_param_groups(model, muon=dict(lr=0.02), adamw=dict(lr=3e-3, betas=(0.9, 0.95)))
    optimizer = descend.MuonWithAuxAdamW(groups)
    muon_group, adamw_group = optimizer.param_groups
    assert (muon_group["momentum"], muon_group["weight_decay"], muon_group["ns_steps"]) == (0.95, 0.1, 5)
    assert (adamw_group["eps"], adamw_group["weight_decay"], adamw_group["betas"]) == (1e-8, 1e-2, (0.9, 0.95))
    twin_groups = descend.muon_param_groups(twin)
    torch_muon = torch.optim.Muon(twin_groups[0]["params"], lr=0.02)
    torch_adamw = torch.optim.AdamW(twin_groups[1]["params"], lr=3e-3, betas=(0.9, 0.95))
    for _ in range(6):
        for opt, net in ((optimizer, model), (torch_muon, twin)):
            net.zero_grad()
            nn.functional.cross_entropy(net(tokens).flatten(0, 1), tokens.flatten()).backward()
        optimizer.step(), torch_muon.step(), torch_adamw.step()
    assert_identical([p.detach() for p in groups[0]["params"]], [p.detach() for p in twin_groups[0]["params"]])
    for a, b in zip(groups[1]["params"], twin_groups[1]["params"]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    saved = optimizer.state_dict()  # one checkpoint for both kinds of group, and it resumes
    keys = [set(s) for s in saved["state"].values()]
    assert {"momentum_buffer"} in keys and {"step", "exp_avg", "exp_avg_sq"} in keys
    resumed = descend.MuonWithAuxAdamW(descend.muon_param_groups(twin))
    resumed.load_state_dict(copy.deepcopy(saved))
    assert resumed.param_groups[0]["lr"] == 0.02 and resumed.state_dict()["state"].keys() == saved["state"].keys()


def test_muon_with_aux_adamw_wants_use_muon_in_every_group():
    with pytest.raises(ValueError, match="use_muon"):
        descend.MuonWithAuxAdamW(Tiny().parameters())
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        descend.MuonWithAuxAdamW([dict(params=[torch.zeros(3, requires_grad=True)], use_muon=True)])


# --- FSDP2: the owner of each matrix ------------------------------------------------------------


def test_owners_balance_the_iterations_flops_and_agree_on_every_rank():
    shapes = [(1024, 1024), (256, 256), (256, 256), (512, 2048), (64, 64), (2048, 512)]
    owners = sharded.owners(shapes, 2)
    assert owners == sharded.owners(list(shapes), 2)
    loads = [sum(sharded.flops(s) for s, o in zip(shapes, owners) if o == rank) for rank in range(2)]
    assert max(loads) / sum(loads) < 0.6  # the greedy split: neither rank does much more than half
    assert sharded._chunks(5, 2) == [3, 2] and sharded._chunks(1, 2) == [1, 0]
    assert math.isclose(sharded.flops((4, 8)), sharded.flops((8, 4)))
