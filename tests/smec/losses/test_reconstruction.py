import torch

from smec.losses.reconstruction import reconstruction_loss


def test_mean_absolute_difference_against_a_detached_target():
    y = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [0.5, 1.0]], requires_grad=True)
    loss = reconstruction_loss(y, target)
    assert loss.item() == (1.0 + 2.0 + 0.0 + 1.0) / 4
    loss.backward()
    assert target.grad is None  # the frozen input is a constant
    assert torch.equal(y.grad, torch.tensor([[0.25, -0.25], [0.0, -0.25]]))


def test_zero_at_the_identity():
    x = torch.randn(3, 5)
    assert reconstruction_loss(x.clone(), x).item() == 0.0
