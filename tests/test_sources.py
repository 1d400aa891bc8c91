"""Data sources (model_code/data/sources.py): epochs, exact resume, augmentation, dequantisation."""
import math

import pytest
import torch

from model_code.data.sources import Batch, StreamSource, TensorSource
from model_code.errors import UserError


def coded_images(n, side=4):
    """Images whose pixel values encode (sample index, pixel index): any mix-up is visible."""
    pixels = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side)
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) * 1000 + pixels


def take(iterator, k):
    return [next(iterator) for _ in range(k)]


def test_batch_len_slice_and_to():
    b = Batch(torch.arange(12.0).view(6, 2), torch.arange(6))
    assert len(b) == 6
    part = b[2:4]
    assert torch.equal(part.x, torch.tensor([[4.0, 5.0], [6.0, 7.0]])) and torch.equal(part.labels, torch.tensor([2, 3]))
    assert Batch(torch.zeros(3, 1))[1:].labels is None
    moved = b.to("cpu")
    assert torch.equal(moved.x, b.x) and torch.equal(moved.labels, b.labels)


def test_epochs_are_permutations_from_the_generator():
    n, bs = 10, 3
    src = TensorSource(torch.arange(n, dtype=torch.float32)[:, None], labels=torch.arange(n))
    assert src.batches_per_epoch(bs) == 4 == math.ceil(n / bs)
    g = torch.Generator().manual_seed(5)
    it = src.batches(bs, g)
    first = take(it, 4)
    assert [len(b) for b in first] == [3, 3, 3, 1]            # the last batch of an epoch is short
    assert src.epoch == 1 and src.position == 0
    order = torch.cat([b.x[:, 0] for b in first]).long()
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    assert torch.equal(order, expected)                        # exactly the generator's permutation
    assert torch.equal(torch.cat([b.labels for b in first]), order)   # labels follow their samples
    second = torch.cat([b.x[:, 0] for b in take(it, 4)]).long()
    assert sorted(second.tolist()) == list(range(n)) and not torch.equal(second, order)
    assert src.epoch == 2


@pytest.mark.parametrize("save_after", [3, 4, 5])   # mid-epoch, at the epoch boundary, after it
def test_resume_continues_with_the_same_batches(save_after):
    x, labels = coded_images(10), torch.arange(10) % 7
    options = dict(hflip=0.5, vflip=0.5, rot90=0.5, dequantize_levels=None)
    src = TensorSource(x, labels, **options)
    g = torch.Generator().manual_seed(0)
    it = src.batches(3, g)
    take(it, save_after)
    state, g_state = src.state_dict(), g.get_state()
    rest = take(it, 7 - save_after)

    resumed = TensorSource(x.clone(), labels.clone(), **options)
    resumed.load_state_dict(state)
    g2 = torch.Generator()
    g2.set_state(g_state)
    again = take(resumed.batches(3, g2), 7 - save_after)
    for a, b in zip(rest, again):
        assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert resumed.epoch == src.epoch and resumed.position == src.position


def test_resume_with_dequantisation_draws_the_same_noise():
    x = torch.randint(0, 17, (9, 1, 4, 4)).float() / 16
    src = TensorSource(x, dequantize_levels=17, hflip=0.5)
    g = torch.Generator().manual_seed(3)
    it = src.batches(4, g)
    take(it, 2)
    state, g_state = src.state_dict(), g.get_state()
    rest = take(it, 3)
    resumed = TensorSource(x, dequantize_levels=17, hflip=0.5)
    resumed.load_state_dict(state)
    g.set_state(g_state)
    for a, b in zip(rest, take(resumed.batches(4, g), 3)):
        assert torch.equal(a.x, b.x)


def test_flip_and_rotation_probabilities():
    n = 4000
    x = coded_images(n, side=3)
    for option, transform in (("hflip", lambda u: u.flip(-1)), ("vflip", lambda u: u.flip(-2)),
                              ("rot90", lambda u: torch.rot90(u, 1, dims=(-2, -1)))):
        src = TensorSource(x, **{option: 0.3})
        batch = next(src.batches(n, torch.Generator().manual_seed(1)))
        idx = (batch.x[:, 0, 0, 0] // 1000).long()
        original = x[idx]
        changed = (batch.x != original).flatten(1).any(1)
        assert torch.equal(batch.x[changed], transform(original[changed]))    # changed ones: exactly transformed
        frac = changed.double().mean().item()
        assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)                # binomial, 4 standard errors
        always = next(TensorSource(x[:5], **{option: 1.0}).batches(5, torch.Generator().manual_seed(0)))
        idx = (always.x[:, 0, 0, 0] // 1000).long()
        if option == "rot90":
            idx = (always.x[:, 0, 0, 2] // 1000).long()    # rot90 moves pixel (0, 2) to (0, 0)
        assert torch.equal(always.x, transform(x[:5][idx]))


def test_rotation_needs_square_images_and_probabilities_are_checked():
    with pytest.raises(UserError, match="square"):
        TensorSource(torch.zeros(4, 1, 3, 5), rot90=0.5)
    TensorSource(torch.zeros(4, 1, 3, 5), hflip=0.5, vflip=0.5)
    with pytest.raises(UserError, match="probability"):
        TensorSource(torch.zeros(4, 1, 3, 3), hflip=1.5)
    with pytest.raises(UserError, match="images"):
        TensorSource(torch.zeros(4, 2), hflip=0.5)
    with pytest.raises(UserError, match="labels"):
        TensorSource(torch.zeros(4, 1, 3, 3), labels=torch.zeros(3))
    with pytest.raises(UserError, match="dequantize_levels"):
        TensorSource(torch.zeros(4, 1, 3, 3), dequantize_levels=1)


def test_uniform_dequantisation_fills_each_bin():
    L = 4
    levels = torch.arange(L).repeat(2000)
    x = (levels.float() / (L - 1)).view(-1, 1, 1, 1)                # every grid value k / (L - 1)
    src = TensorSource(x, dequantize_levels=L)
    batch = next(src.batches(len(x), torch.Generator().manual_seed(0)))
    # x_deq = (x (L-1) + u) / L with u ~ U[0, 1): level k lands in [k / L, (k + 1) / L).
    deq = batch.x.flatten()
    assert deq.min() >= 0 and deq.max() < 1
    k = torch.floor(deq * L).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))   # the epoch's permutation
    assert torch.equal(torch.floor(deq * L).long(), levels[order])   # each value stays in its own bin
    u = deq * L - k                                                  # the recovered U[0, 1) draws
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / len(u))
    assert abs(u.var().item() - 1 / 12) < 0.01


def test_load_state_checks_the_data_size():
    src = TensorSource(torch.zeros(6, 1))
    it = src.batches(4, torch.Generator().manual_seed(0))
    next(it)
    state = src.state_dict()
    assert state["position"] == 4 and len(state["permutation"]) == 6
    with pytest.raises(UserError, match="6 samples"):
        TensorSource(torch.zeros(7, 1)).load_state_dict(state)
    with pytest.raises(UserError, match="batch_size"):
        next(src.batches(0, torch.Generator()))


def test_stream_source_draws_fresh_batches():
    def sample(n, generator):
        return torch.rand(n, 2, generator=generator)

    src = StreamSource(sample)
    g = torch.Generator().manual_seed(0)
    a, b = take(src.batches(5, g), 2)
    ref = torch.Generator().manual_seed(0)
    assert torch.equal(a.x, sample(5, ref)) and torch.equal(b.x, sample(5, ref))
    assert a.labels is None and src.state_dict() == {} and src.batches_per_epoch(5) is None
    src.load_state_dict({})
