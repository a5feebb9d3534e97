import math

import pytest
import torch

from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.temperature import LearnableTemperature, check_temperature

DT = torch.float64


def test_initial_value_and_scale():
    temp = LearnableTemperature(init=0.07)
    tau = temp()
    assert tau.dim() == 0 and tau.requires_grad
    assert tau.item() == pytest.approx(0.07, rel=1e-6)
    assert temp.scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert temp.log_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert [name for name, _ in temp.named_parameters()] == ["log_scale"]
    assert "log_scale" in temp.state_dict()


def test_clamped_in_place_after_the_step_and_the_gradient_still_flows():
    temp = LearnableTemperature(init=0.07, max_scale=100.0)
    with torch.no_grad():
        temp.log_scale.fill_(math.log(1000.0))
    assert temp.clamp_() is temp
    assert temp.log_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)
    tau = temp()
    assert tau.item() == pytest.approx(0.01, rel=1e-6)
    (grad,) = torch.autograd.grad(tau, temp.log_scale)
    assert grad.item() == pytest.approx(-0.01, rel=1e-5)  # d exp(-theta) / d theta = -tau, never 0 at the bound


def test_a_temperature_at_the_bound_can_rise_again():
    """Data preferring a higher temperature: from the bound (tau = 0.01) Adam raises it (the old in-forward
    clamp gave a zero gradient there and tau stayed at 0.01 forever)."""
    torch.manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(64, 8), dim=1)
    z2 = torch.nn.functional.normalize(z1 + 2.0 * torch.randn(64, 8), dim=1)  # noisy positives: a high tau fits
    temp = LearnableTemperature(init=0.07, max_scale=100.0)
    with torch.no_grad():
        temp.log_scale.fill_(math.log(100.0))
    opt = torch.optim.Adam(temp.parameters(), lr=0.05)
    for _ in range(50):
        loss = info_nce(z1, z2, temperature=temp(), symmetric=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        temp.clamp_()
    assert temp().item() > 0.03


def test_gradient_reaches_the_parameter_through_the_loss():
    z1, z2 = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    temp = LearnableTemperature(init=0.2).double()
    loss = info_nce(z1, z2, temperature=temp(), symmetric=True)
    (grad,) = torch.autograd.grad(loss, temp.log_scale)
    # central finite difference in theta = log(1/tau)
    theta, h = temp.log_scale.item(), 1e-6

    def at(th):
        return info_nce(z1, z2, temperature=math.exp(-th), symmetric=True).item()

    assert grad.item() == pytest.approx((at(theta + h) - at(theta - h)) / (2 * h), rel=1e-5, abs=1e-8)
    assert grad.item() != 0.0


def test_optimizer_moves_the_temperature():
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    temp = LearnableTemperature(init=0.5)
    opt = torch.optim.SGD(temp.parameters(), lr=0.5)
    before = temp().item()
    for _ in range(5):
        opt.zero_grad()
        info_nce(z, z, temperature=temp()).backward()  # aligned positives: a sharper softmax helps
        opt.step()
    assert temp().item() < before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": 0.0}, "init"),
        ({"init": -0.1}, "init"),
        ({"init": float("nan")}, "init"),
        ({"max_scale": 0}, "max_scale"),
        ({"init": 0.001, "max_scale": 100.0}, "init=0.001"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnableTemperature(**kwargs)


def test_check_temperature():
    assert check_temperature(0.5) == 0.5
    t = torch.tensor(0.3)
    assert check_temperature(t) is t
    for bad in (0.0, -1.0, float("inf"), True, torch.ones(1), torch.tensor(2)):
        with pytest.raises(ValueError, match="temperature"):
            check_temperature(bad)


def test_repr_mentions_temperature():
    assert "temperature=0.07" in repr(LearnableTemperature(init=0.07))
