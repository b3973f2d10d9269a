"""torch.optim's contract, checked on descend's stand-ins with torch's own test inputs.

What torch's test/test_optim.py checks of every optimizer, written for descend: the same numbers as torch on
every path (reference one-at-a-time, foreach, fused kernel, torch.compile), state dicts that are
deterministic and round-trip (also to and from torch.optim), hooks, step counters that are not tensors,
tensor learning rates, construction errors, and torch's signatures.  The optimizers and inputs come from
tests/contract_registry.py.
"""
from __future__ import annotations

import copy
import inspect

import pytest
import torch

import descend
from contract_registry import PAIRS, as_gradient, cases, has_kernel, pair_ids

STEPS = 4
PATHS = {  # how descend may run a step: each must give torch's numbers
    "reference": dict(fused=False, foreach=False),
    "foreach": dict(fused=False, foreach=True),
    "default": {},  # the fused kernel where it can run
}


def make_params(seed=0, dtype=torch.float32, shapes=((5, 4), (4,))):
    """Two parameters of different shapes (torch's tests use a weight and a bias; ``Pair.shapes``)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype).requires_grad_() for shape in shapes]


def gradients(step, params):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def train(optimizer, params, steps=STEPS, first=0):
    for step in range(first, first + steps):
        for p, grad in zip(params, gradients(step, params)):
            p.grad = as_gradient(optimizer, grad.clone())
        optimizer.step()
    return [p.detach().clone() for p in params]


def fresh(kwargs):
    """kwargs with tensors copied, so that two optimizers never share a tensor lr."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def assert_params_close(got, want, tolerance=1e-5):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tolerance, atol=tolerance)


# --- the same numbers as torch, on every path --------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("pair, desc, kwargs", cases())
def test_every_path_gives_torchs_numbers(pair, desc, kwargs, path):
    ours_params, theirs_params = make_params(shapes=pair.shapes), make_params(shapes=pair.shapes)
    ours = train(pair.ours(ours_params, **fresh(kwargs), **PATHS[path]), ours_params)
    theirs = train(pair.theirs(theirs_params, **fresh(kwargs)), theirs_params)
    assert_params_close(ours, theirs)


@pytest.mark.parametrize("path", ["reference", "foreach", "default"])
@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_compiled_step_equals_the_eager_step(pair, path):
    torch._dynamo.reset()
    kwargs = next((k for _, k in pair.inputs() if "momentum" in k or "weight_decay" in k), pair.inputs()[-1][1])
    eager_params, compiled_params = make_params(shapes=pair.shapes), make_params(shapes=pair.shapes)
    eager = train(pair.ours(eager_params, **fresh(kwargs), **PATHS[path]), eager_params)
    optimizer = pair.ours(compiled_params, **fresh(kwargs), **PATHS[path])
    optimizer.step = torch.compile(optimizer.step)
    compiled = train(optimizer, compiled_params)
    assert_params_close(compiled, eager, tolerance=0)


# --- state dicts ----------------------------------------------------------------------------


@pytest.mark.parametrize("pair, desc, kwargs", cases())
def test_state_dict_is_deterministic_and_round_trips(pair, desc, kwargs):
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params, **fresh(kwargs))
    train(optimizer, params)
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = pair.ours(twin_params, **fresh(kwargs))
    saved = copy.deepcopy(optimizer.state_dict())
    twin.load_state_dict(copy.deepcopy(saved))
    assert_state_dicts_equal(twin.state_dict(), saved)  # save -> load -> save changes nothing
    assert_params_close(train(twin, twin_params, first=STEPS), train(optimizer, params, first=STEPS), tolerance=0)
    assert_state_dicts_equal(twin.state_dict(), optimizer.state_dict())  # equal, not identical, parameters


def assert_state_dicts_equal(a, b):
    assert a.keys() == b.keys()
    assert a["param_groups"] == b["param_groups"] or _groups_close(a["param_groups"], b["param_groups"])
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert a["state"][key].keys() == b["state"][key].keys()
        for name in a["state"][key]:
            torch.testing.assert_close(a["state"][key][name], b["state"][key][name], rtol=0, atol=0)


def _groups_close(a, b):  # tensor lr: == on tensors is elementwise
    return all(ga.keys() == gb.keys() and all(
        torch.equal(torch.as_tensor(ga[k]), torch.as_tensor(gb[k])) if isinstance(ga[k], torch.Tensor) else ga[k] == gb[k]
        for k in ga) for ga, gb in zip(a, b))


@pytest.mark.parametrize("pair, desc, kwargs", cases())
def test_torch_checkpoints_load_and_continue_as_torch_would(pair, desc, kwargs):
    theirs_params = make_params(shapes=pair.shapes)
    theirs = pair.theirs(theirs_params, **fresh(kwargs))
    train(theirs, theirs_params)
    ours_params = [p.detach().clone().requires_grad_() for p in theirs_params]
    ours = pair.ours(ours_params, **fresh(kwargs))
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert_params_close(train(ours, ours_params, first=STEPS), train(theirs, theirs_params, first=STEPS))
    back_params = [p.detach().clone().requires_grad_() for p in ours_params]  # and descend's into torch
    back = pair.theirs(back_params, **fresh(kwargs))
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert_params_close(train(back, back_params, first=2 * STEPS), train(ours, ours_params, first=2 * STEPS))


@pytest.mark.parametrize("as_", ["python number", "int64 tensor"])
@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_step_counters_that_are_not_float_tensors_load_and_train(pair, as_):
    """Checkpoints of torch < 1.12 (and other libraries) keep ``step`` as a number or an int64 tensor."""
    kwargs = pair.inputs()[0][1]
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params, **fresh(kwargs))
    train(optimizer, params)
    saved = copy.deepcopy(optimizer.state_dict())
    for state in saved["state"].values():
        if "step" in state:
            state["step"] = int(state["step"].item()) if as_ == "python number" else state["step"].to(torch.int64)
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = pair.ours(twin_params, **fresh(kwargs))
    twin.load_state_dict(saved)
    assert_params_close(train(twin, twin_params, first=STEPS), train(optimizer, params, first=STEPS), tolerance=0)


def test_sgd_without_momentum_keeps_no_per_parameter_state_as_torch():
    params, torch_params = make_params(), make_params()
    optimizer, reference = descend.SGD(params, lr=0.1), torch.optim.SGD(torch_params, lr=0.1)
    train(optimizer, params), train(reference, torch_params)
    assert optimizer.state_dict()["state"] == reference.state_dict()["state"] == {}


def test_a_torch_adamw_checkpoint_in_descend_adam_with_decoupled_weight_decay_decays_decoupled():
    theirs_params = make_params()
    theirs = torch.optim.AdamW(theirs_params, lr=0.01, weight_decay=0.5)
    train(theirs, theirs_params)
    saved = theirs.state_dict()
    for group in saved["param_groups"]:  # as a checkpoint of a torch without the option in its groups
        group.pop("decoupled_weight_decay", None)
    ours_params = [p.detach().clone().requires_grad_() for p in theirs_params]
    ours = descend.Adam(ours_params, lr=0.01, weight_decay=0.5, decoupled_weight_decay=True)
    ours.load_state_dict(copy.deepcopy(saved))  # (torch's load keeps tensors of the right dtype: no copy)
    assert_params_close(train(ours, ours_params, first=STEPS), train(theirs, theirs_params, first=STEPS))


FAMILIES = {pair.family: pair for pair in PAIRS}


@pytest.mark.parametrize("writer", ["descend", "torch"])
@pytest.mark.parametrize("source, target", [(a, b) for a in FAMILIES.values() for b in FAMILIES.values()
                                            if a.family != b.family], ids=lambda p: p.name)
def test_a_checkpoint_of_another_optimizer_is_refused_and_changes_nothing(source, target, writer):
    kwargs = dict(lr=0.5, momentum=0.9) if source.ours in (descend.SGD, descend.RMSprop) else dict(lr=0.5)
    params = make_params(shapes=source.shapes)
    written = (source.ours if writer == "descend" else source.theirs)(params, **kwargs)
    train(written, params)
    target_params = make_params(seed=1, shapes=target.shapes)
    optimizer = target.ours(target_params)
    train(optimizer, target_params, steps=1)
    before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(ValueError, match="another optimizer"):
        optimizer.load_state_dict(written.state_dict())
    assert_state_dicts_equal(optimizer.state_dict(), before)


# --- hooks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_load_state_dict_hooks_run_around_descends_own_fix_ups(pair):
    """torch's pattern: a pre-hook may return a new state dict, a post-hook sees the loaded optimizer and
    may keep entries that are not a parameter's state (here a flag) in ``optimizer.state``."""
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params)
    train(optimizer, params)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        group.pop("foreach")  # an older checkpoint: descend's fix-up puts it back before the post-hook runs

    def pre_hook(opt, state_dict):
        state_dict = copy.deepcopy(state_dict)
        state_dict["param_groups"][0]["lr"] = 0.003
        return state_dict

    def post_hook(opt):
        opt.state["post hook saw"] = (opt.param_groups[0]["lr"], "foreach" in opt.param_groups[0])

    optimizer.register_load_state_dict_pre_hook(pre_hook)
    optimizer.register_load_state_dict_post_hook(post_hook)
    optimizer.load_state_dict(saved)
    assert optimizer.state["post hook saw"] == (0.003, True)
    again = optimizer.state_dict()  # the flag is not a parameter's state: it travels as torch's does
    optimizer.load_state_dict(again)
    train(optimizer, params, steps=1)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_state_dict_post_hook_sees_descends_entries_and_step_hooks_run(pair):
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params)
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    optimizer.register_state_dict_post_hook(lambda opt, sd: calls.append(sorted(k for k in sd if k != "state")))
    train(optimizer, params, steps=1)
    optimizer.state_dict()
    assert calls == ["pre", "post", ["optimizer", "param_groups", "skipped_steps"]]


# --- learning rates as tensors; values edited after construction --------------------------


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=["[]", "[1]", "[1,1]"])
@pytest.mark.parametrize("path", ["reference", "foreach", "default", "fused"])
@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_a_one_element_tensor_lr_works_on_every_path(pair, path, shape):
    if path == "fused" and not has_kernel(pair.ours):
        pytest.skip("no fused kernel here")
    options = dict(fused=True) if path == "fused" else PATHS[path]
    with_float, with_tensor = make_params(shapes=pair.shapes), make_params(shapes=pair.shapes)
    if pair.tensor_lr_is_float32:  # torch's own numbers for this tensor lr
        want = train(pair.theirs(with_float, lr=torch.full(shape, 0.01)), with_float)
    else:
        want = train(pair.ours(with_float, lr=torch.tensor(0.01).item(), **options), with_float)  # 0.01 in float32
    got = train(pair.ours(with_tensor, lr=torch.full(shape, 0.01), **options), with_tensor)
    assert_params_close(got, want, tolerance=0)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_a_tensor_lr_of_more_than_one_element_is_a_value_error(pair):
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        pair.ours(make_params(shapes=pair.shapes), lr=torch.tensor([0.01, 0.01]))


@pytest.mark.parametrize("value", ["0.01", None, [0.01, 0.02]], ids=["str", "None", "list"])
@pytest.mark.parametrize("path", ["reference", "foreach", "default"])
@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_a_group_value_edited_into_a_non_number_is_a_type_error_naming_it(pair, path, value):
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params, **PATHS[path])
    optimizer.param_groups[0]["lr"] = value
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in params]
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\]"):
        optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))


# --- construction: torch's errors, signatures and options -------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_torchs_construction_errors(pair):
    for error in pair.error_inputs():
        inputs = error.optimizer_error_input
        params = inputs.params if inputs.params is not None else make_params(shapes=pair.shapes)
        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type, match=error.error_regex):
                pair.ours(params, **inputs.kwargs)
            continue
        with pytest.raises(error.error_type) as raised:
            optimizer = pair.ours(params, **inputs.kwargs)
            if error.error_on == error.error_on.STEP_ERROR:
                optimizer.step()
        if "Invalid" not in error.error_regex:  # torch's base class words these; descend words its own checks
            assert raised.match(error.error_regex)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_signature_matches_torch(pair):
    """Positional arguments mean what they mean in torch; every keyword torch takes is taken, with torch's
    default (descend's own options come after, keyword-only)."""
    ours = inspect.signature(pair.ours).parameters
    theirs = inspect.signature(pair.theirs).parameters
    positional = [n for n, p in theirs.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [n for n, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD] == positional
    for name, parameter in theirs.items():
        assert name in ours, f"{pair.name} lacks torch's {name!r}"
        if parameter.default is not inspect.Parameter.empty:
            assert ours[name].default == parameter.default, name


def test_sgd_positional_arguments_mean_what_they_mean_in_torch():
    optimizer = descend.SGD(make_params(), 0.1, 0.9, 0, 5e-4)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"]) == (
        0.1, 0.9, 0, 5e-4, False)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_booleans_given_as_none_mean_false_and_train(pair):
    flags = [n for n, p in inspect.signature(pair.theirs).parameters.items() if isinstance(p.default, bool)]
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params, **{flag: None for flag in flags})
    assert all(optimizer.param_groups[0][flag] is False for flag in flags)
    train(optimizer, params, steps=2)


@pytest.mark.parametrize("option", ["differentiable", "capturable"])
@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_differentiable_and_capturable(pair, option):
    if option not in inspect.signature(pair.theirs).parameters:
        pytest.skip(f"torch.optim.{pair.theirs.__name__} has no {option}")
    params, reference_params = make_params(shapes=pair.shapes), make_params(shapes=pair.shapes)
    assert_params_close(train(pair.ours(params, **{option: False}), params),
                        train(pair.ours(reference_params), reference_params), tolerance=0)
    with pytest.raises(NotImplementedError, match=f"{option}=True"):
        pair.ours(make_params(shapes=pair.shapes), **{option: True})


@pytest.mark.parametrize("pair", PAIRS, ids=pair_ids())
def test_add_param_group_that_fails_validation_is_not_added(pair):
    params = make_params(shapes=pair.shapes)
    optimizer = pair.ours(params[:1])
    with pytest.raises(ValueError):
        optimizer.add_param_group({"params": params[1:], "lr": -1.0})
    assert len(optimizer.param_groups) == 1
    optimizer.add_param_group({"params": params[1:]})  # the parameter is free to join correctly
    train(optimizer, params, steps=1)


@pytest.mark.parametrize("pair", [p for p in PAIRS if "fused" in inspect.signature(p.theirs).parameters],
                         ids=lambda p: p.name)
def test_fused_true_errors_use_torchs_words(pair):
    param = torch.randn(4, 6)[:, ::2].requires_grad_()  # strided, not dense: no kernel takes it
    param.grad = torch.ones(4, 3)
    if has_kernel(pair.ours):
        with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point Tensors"):
            pair.ours([param], fused=True).step()
    with pytest.raises(Exception, match="`fused` and `foreach` cannot be `True` together"):
        pair.ours(make_params(shapes=pair.shapes), fused=True, foreach=True)
