import math

import pytest
import torch

from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.queue import NegativeQueue


def _rows(t):
    return {tuple(r) for r in t.tolist()}


def test_empty_then_fills_in_order():
    q = NegativeQueue(size=5, dim=2)
    assert q.negatives().shape == (0, 2) and len(q) == 0
    a = torch.arange(6.0).view(3, 2)
    q.enqueue(a)
    assert len(q) == 3
    torch.testing.assert_close(q.negatives(), a)


def test_wraparound_keeps_the_most_recent_keys():
    q = NegativeQueue(size=5, dim=1)
    seen = []
    for step in range(7):
        keys = torch.arange(3.0 * step, 3.0 * step + 3).view(3, 1)
        q.enqueue(keys)
        seen.extend(keys.view(-1).tolist())
        assert len(q) == min(5, len(seen))
        assert sorted(q.negatives().view(-1).tolist()) == sorted(seen[-5:])


def test_batch_larger_than_the_queue_keeps_its_last_rows():
    q = NegativeQueue(size=3, dim=1)
    q.enqueue(torch.arange(8.0).view(8, 1))
    assert sorted(q.negatives().view(-1).tolist()) == [5.0, 6.0, 7.0]


def test_negatives_are_a_detached_copy():
    q = NegativeQueue(size=4, dim=3)
    q.enqueue(torch.randn(4, 3, requires_grad=True))
    neg = q.negatives()
    assert not neg.requires_grad
    neg.zero_()
    assert q.negatives().abs().sum() > 0
    # MoCo's order (enqueue before backward) must not break the graph
    z1, z2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    loss = info_nce(z1, z2, negatives=q.negatives())
    q.enqueue(z2)
    loss.backward()
    assert torch.isfinite(z1.grad).all()


def test_a_batch_never_meets_its_own_positive_among_the_negatives():
    torch.manual_seed(0)
    q = NegativeQueue(size=10, dim=4)
    for step in range(8):
        z1 = torch.randn(4, 4, requires_grad=True)
        z2 = torch.randn(4, 4)  # the keys (positives) of this batch
        negatives = q.negatives()
        # no stored key equals any positive of the current batch
        assert not (torch.cdist(z2, negatives) == 0).any() if len(negatives) else True
        loss = info_nce(z1, z2, negatives=negatives) if len(negatives) else info_nce(z1, z2)
        loss.backward()
        q.enqueue(z2)
        # the wrong order would put every positive into the negatives
        assert (torch.cdist(z2, q.negatives()) == 0).any(dim=1).all()


def test_queue_loss_equals_reference_with_earlier_keys_only():
    q = NegativeQueue(size=6, dim=3, dtype=torch.float64)
    earlier = torch.randn(6, 3, dtype=torch.float64)
    q.enqueue(earlier)
    z1, z2 = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    loss = info_nce(z1, z2, temperature=0.5, negatives=q.negatives())
    unit = torch.nn.functional.normalize
    expected = 0.0
    for i in range(2):
        a = unit(z1[i], dim=0)
        cands = [unit(z2[i], dim=0)] + [unit(k, dim=0) for k in earlier]
        scores = [float(a @ c) / 0.5 for c in cands]
        expected += -scores[0] + math.log(sum(math.exp(s) for s in scores))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-12)


def test_ids_exclude_older_keys_of_the_same_items():
    q = NegativeQueue(size=8, dim=2)
    q.enqueue(torch.randn(4, 2), ids=torch.tensor([10, 11, 12, 13]))
    q.enqueue(torch.randn(4, 2), ids=torch.tensor([20, 21, 22, 23]))
    stored = q.negatives()
    kept = q.negatives(exclude_ids=torch.tensor([11, 22, 99]))
    assert kept.shape == (6, 2)
    assert _rows(kept) == _rows(stored[[0, 2, 3, 4, 5, 7]])
    q.enqueue(torch.randn(2, 2))  # overwrites items 10 and 11; keys without ids are never excluded
    assert q.negatives(exclude_ids=torch.tensor([10, 11])).shape == (8, 2)
    assert q.negatives(exclude_ids=torch.tensor([12])).shape == (7, 2)


def test_state_dict_roundtrip_and_dtype():
    q = NegativeQueue(size=4, dim=2)
    q.enqueue(torch.randn(3, 2))
    r = NegativeQueue(size=4, dim=2)
    r.load_state_dict(q.state_dict())
    assert len(r) == 3 and torch.equal(r.negatives(), q.negatives())
    assert set(q.state_dict()) == {"keys", "ids", "pointer", "filled"}
    d = NegativeQueue(size=4, dim=2).double()
    d.enqueue(torch.randn(2, 2))
    assert d.negatives().dtype == torch.float64
    q.reset()
    assert len(q) == 0 and q.negatives().shape == (0, 2)


def test_bad_arguments():
    for kwargs, match in (({"size": 0, "dim": 2}, "size"), ({"size": 3, "dim": 2.0}, "dim"), ({"size": True, "dim": 2}, "size")):
        with pytest.raises(ValueError, match=match):
            NegativeQueue(**kwargs)
    q = NegativeQueue(size=3, dim=2)
    with pytest.raises(ValueError, match=r"\(B, 2\), got \(4, 3\)"):
        q.enqueue(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        q.enqueue(torch.randn(4))
    with pytest.raises(ValueError, match=r"ids must have shape \(4,\)"):
        q.enqueue(torch.randn(4, 2), ids=torch.arange(3))
