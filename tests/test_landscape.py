"""descend.landscape: on a quadratic whose loss surface is known in closed form."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import descend
from descend.tools.landscape import filter_normalized_direction

_M = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
A = _M.T @ _M / 6 + 0.5 * torch.eye(6, dtype=torch.float64)  # symmetric positive definite
C = torch.tensor([0.3, -0.2, 0.1, 0.4, -0.6, 0.2], dtype=torch.float64)


class Quadratic(nn.Module):
    """Parameters W (2×2) and b (2,); the output ignores the input batch except for its size."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, -0.5], [0.25, 2.0]], dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))

    def forward(self, x):
        theta = torch.cat([self.weight.reshape(-1), self.bias])
        return theta.expand(x.shape[0], 6)


def quadratic_loss(output, target):
    """½ (θ − c)ᵀ A (θ − c), averaged over the (identical) rows: the mean over batches is the same number."""
    r = output - C
    return 0.5 * ((r @ A) * r).sum(-1).mean() + 0.0 * target.sum()


def closed_form(theta: torch.Tensor) -> float:
    r = theta - C
    return float(0.5 * r @ A @ r)


DATA = (torch.zeros(6, 1, dtype=torch.float64), torch.zeros(6, dtype=torch.float64))


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_two_given_directions_give_the_closed_form_surface():
    model = Quadratic()
    d1 = [torch.tensor([[1.0, 0.0], [0.0, 0.5]]).double(), torch.tensor([0.0, 1.0]).double()]
    d2 = [torch.tensor([[0.0, -1.0], [1.0, 0.0]]).double(), torch.tensor([0.2, 0.0]).double()]
    result = descend.landscape(model, quadratic_loss, DATA, directions=[d1, d2], steps=7, span=2.0,
                               points_per_batch=5, progress=False)
    theta = flat(p.detach() for p in model.parameters())
    assert result.kind == "2d" and result.loss.shape == (7, 7)
    for j, b in enumerate(result.y):
        for i, a in enumerate(result.x):
            assert result.loss[j, i] == pytest.approx(closed_form(theta + a * flat(d1) + b * flat(d2)), rel=1e-12)
    assert result.center_loss == pytest.approx(closed_form(theta), rel=1e-12)


def test_interpolation_between_two_parameter_sets():
    model = Quadratic()
    theta_a = flat(p.detach() for p in model.parameters())
    theta_b = C.clone()  # the minimum
    result = descend.landscape(model, quadratic_loss, DATA, directions="interpolate", target=theta_b, steps=7,
                               progress=False)
    assert result.kind == "1d" and result.x[0] == -0.25 and result.x[-1] == 1.25
    expected = [closed_form((1 - t) * theta_a + t * theta_b) for t in result.x]
    np.testing.assert_allclose(result.loss, expected, rtol=1e-12, atol=1e-14)
    assert result.loss[result.x.tolist().index(1.0)] == pytest.approx(0.0, abs=1e-14)


def test_filter_normalized_directions_match_each_filters_norm_and_skip_biases():
    model = Quadratic()
    direction = filter_normalized_direction([p.detach() for p in model.parameters()], torch.Generator().manual_seed(3))
    weight = model.weight.detach()
    np.testing.assert_allclose(direction[0].norm(dim=1), weight.norm(dim=1), rtol=1e-9)
    assert torch.equal(direction[1], torch.zeros(2, dtype=torch.float64))
    # the surface along them is the closed form along those same directions
    result = descend.landscape(model, quadratic_loss, DATA, steps=5, seed=3, progress=False)
    d1, d2 = (flat(d) for d in result.directions)
    theta = flat(p.detach() for p in model.parameters())
    assert result.loss[1, 4] == pytest.approx(closed_form(theta + result.x[4] * d1 + result.y[1] * d2), rel=1e-12)


def test_pca_plane_recovers_a_planar_trajectory():
    model = Quadratic()
    theta = flat(p.detach() for p in model.parameters())
    u = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64) / 2**0.5
    v = torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0, 0.0], dtype=torch.float64) / 2**0.5
    coefficients = [(3.0, 0.4), (2.0, -0.3), (1.2, 0.2), (0.5, -0.1), (0.0, 0.0)]
    trajectory = [theta + s * u + r * v for s, r in coefficients]
    result = descend.landscape(model, quadratic_loss, DATA, "pca", trajectory=trajectory, steps=5, progress=False)
    assert sum(result.explained_variance) == pytest.approx(1.0)
    # the projected path keeps every distance of the (planar) trajectory
    for i in range(len(trajectory)):
        for k in range(len(trajectory)):
            assert np.linalg.norm(result.path[i] - result.path[k]) == pytest.approx(
                float((trajectory[i] - trajectory[k]).norm()), rel=1e-9)
    d1, d2 = (flat(d) for d in result.directions)
    assert float(d1 @ d2) == pytest.approx(0.0, abs=1e-12)
    assert result.loss[0, 0] == pytest.approx(closed_form(theta + result.x[0] * d1 + result.y[0] * d2), rel=1e-12)


def test_batches_of_data_average_by_size():
    model = Quadratic()
    loader = [(DATA[0][:4], DATA[1][:4]), (DATA[0][4:], DATA[1][4:])]
    whole = descend.landscape(model, quadratic_loss, DATA, steps=3, progress=False)
    batched = descend.landscape(model, quadratic_loss, loader, steps=3, progress=False)
    np.testing.assert_allclose(batched.loss, whole.loss, rtol=1e-12)


def test_a_model_that_vmap_cannot_run_falls_back_to_one_point_at_a_time():
    class Stubborn(Quadratic):
        def forward(self, x):
            if self.weight.sum().item() > 1e9:  # .item() has no batching rule
                raise AssertionError
            return super().forward(x)

    given = [[torch.eye(2).double(), torch.zeros(2).double()]]
    result = descend.landscape(Stubborn(), quadratic_loss, DATA, directions=given, steps=4, progress=False)
    reference = descend.landscape(Quadratic(), quadratic_loss, DATA, directions=given, steps=4, progress=False)
    np.testing.assert_allclose(result.loss, reference.loss, rtol=1e-12)


def test_the_model_is_left_as_it_was_also_on_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[1].eval()  # a mix of flags, to be restored exactly
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    calls = []

    def failing_loss(output, target):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("the loss broke")
        return nn.functional.cross_entropy(output, target)

    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    with pytest.raises(RuntimeError, match="the loss broke"):
        descend.landscape(model, failing_loss, data, steps=5, points_per_batch=4, progress=False)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    result = descend.landscape(model, nn.functional.cross_entropy, data, steps=5, progress=False)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    assert result.loss[2, 2] == pytest.approx(result.center_loss)  # the grid's middle is the model itself


def test_bad_arguments_say_what_is_wrong():
    model = Quadratic()
    with pytest.raises(ValueError, match="needs target"):
        descend.landscape(model, quadratic_loss, DATA, directions="interpolate", progress=False)
    with pytest.raises(ValueError, match="steps"):
        descend.landscape(model, quadratic_loss, DATA, steps=1, progress=False)
    with pytest.raises(ValueError, match="directions must be"):
        descend.landscape(model, quadratic_loss, DATA, directions="sideways", progress=False)
    with pytest.raises(ValueError, match="has 3 values"):
        descend.landscape(model, quadratic_loss, DATA, directions=[[torch.zeros(2, 2), torch.zeros(3)]],
                          progress=False)


def test_save_writes_what_the_playground_opens(tmp_path):
    result = descend.landscape(Quadratic(), quadratic_loss, DATA, steps=3, progress=False)
    saved = json.loads(result.save(tmp_path / "surface.json").read_text())
    assert saved["format"] == "descend.landscape" and saved["kind"] == "2d"
    assert np.allclose(saved["loss"], result.loss) and saved["x"] == result.x.tolist()
    figure = result.plot()
    assert len(figure.axes) >= 2


class KeywordQuadratic(Quadratic):
    """Hugging Face style: the model takes its inputs by name."""

    def forward(self, x=None, attention_mask=None):
        assert attention_mask is not None
        return super().forward(x)


def dict_batches(sizes=(4, 2)):
    batches, begin = [], 0
    for size in sizes:
        x, y = DATA[0][begin:begin + size], DATA[1][begin:begin + size]
        batches.append({"x": x, "attention_mask": torch.ones(size), "labels": y})
        begin += size
    return batches


def test_dict_batches_go_through_batch_to_inputs_and_average_by_size():
    whole = descend.landscape(Quadratic(), quadratic_loss, DATA, steps=3, progress=False)
    with pytest.raises(ValueError) as refused:
        descend.landscape(KeywordQuadratic(), quadratic_loss, dict_batches(), steps=3, progress=False)
    message = str(refused.value)
    assert message.startswith("landscape: a batch is a dict (keys 'x', 'attention_mask', 'labels')")
    assert "batch_to_inputs=" in message and "\n" not in message

    def to_inputs(batch):
        return {"x": batch["x"], "attention_mask": batch["attention_mask"]}, batch["labels"]

    for data in (dict_batches(), dict_batches((6,))[0]):  # batches of 4 and 2, or one dict as the whole data
        result = descend.landscape(KeywordQuadratic(), quadratic_loss, data, steps=3, batch_to_inputs=to_inputs,
                                   progress=False)
        np.testing.assert_allclose(result.loss, whole.loss, rtol=1e-12)
    as_tuple = descend.landscape(Quadratic(), quadratic_loss, dict_batches(), steps=3, progress=False,
                                 batch_to_inputs=lambda batch: ((batch["x"],), batch["labels"]))  # model(*inputs)
    np.testing.assert_allclose(as_tuple.loss, whole.loss, rtol=1e-12)
    with pytest.raises(TypeError, match=r"^landscape: batch_to_inputs must return \(inputs, targets\), got dict$"):
        descend.landscape(Quadratic(), quadratic_loss, dict_batches(), steps=3, progress=False,
                          batch_to_inputs=lambda batch: batch)


def test_a_loss_that_is_not_one_number_is_explained_in_one_line():
    def per_sample(output, target):
        r = output - C
        return 0.5 * ((r @ A) * r).sum(-1)  # reduction="none"

    with pytest.raises(ValueError) as refused:
        descend.landscape(Quadratic(), per_sample, DATA, steps=3, progress=False)
    assert str(refused.value).startswith("landscape: loss_fn returned a tensor of shape (6,), not one number")
    assert "reduction=" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(TypeError, match=r"^landscape: loss_fn returned str, not a number"):
        descend.landscape(Quadratic(), lambda output, target: "low", DATA, steps=3, progress=False)


def test_a_loss_returned_as_a_python_float_is_taken():
    given = [[torch.eye(2).double(), torch.zeros(2).double()]]
    as_float = descend.landscape(Quadratic(), lambda output, target: quadratic_loss(output, target).item(), DATA,
                                 directions=given, steps=4, progress=False)
    as_tensor = descend.landscape(Quadratic(), quadratic_loss, DATA, directions=given, steps=4, progress=False)
    np.testing.assert_allclose(as_float.loss, as_tensor.loss, rtol=1e-12)
    assert as_float.center_loss == pytest.approx(as_tensor.center_loss, rel=1e-12)
