"""Comparing a fast objective with its slow reference: the same value and the same gradients."""

import torch


def value_and_grads(fn, *tensors):
    """``fn`` at fresh leaf copies of ``tensors``: its value and its gradient with respect to each."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def assert_same(fast, slow, *tensors, atol=1e-6):
    """``fast`` and ``slow`` agree at ``tensors`` in value and in every gradient, to ``atol``."""
    v1, g1 = value_and_grads(fast, *tensors)
    v2, g2 = value_and_grads(slow, *tensors)
    torch.testing.assert_close(v1, v2, atol=atol, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
