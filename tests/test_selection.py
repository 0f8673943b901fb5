import numpy as np
import pytest
import torch

from foley_core.clap.similarity import cosine_scores
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.selection import best_candidate, select_slot


def test_cosine_scores_match_definition():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    t = np.array([[0.0, 2.0], [1.0, 1.0]])
    assert np.allclose(cosine_scores(a, t), [0.0, 1.0])
    assert np.allclose(cosine_scores(a, np.array([1.0, 0.0])), [1.0, np.sqrt(0.5)])


def test_best_candidate_respects_floor_and_ceiling():
    scores = np.array([0.2, 0.995, 0.5, 0.4])
    assert best_candidate(scores, None, 0.99) == 2  # 0.995 is a near-copy: rejected
    assert best_candidate(scores, 0.45, 0.99) == 2
    assert best_candidate(scores, 0.6, 0.99) is None
    assert best_candidate(scores, None, None) == 1  # no ceiling: the best score wins
    no_ceiling = select_slot(lambda a: [0.5, 1.0], floor=0.3, ceiling=None)
    assert (no_ceiling.index, no_ceiling.accepted) == (1, True)


def test_regenerates_until_a_candidate_qualifies():
    attempts = {0: [0.1, 0.2], 1: [0.15, 0.05], 2: [0.35, 0.31]}
    seen = []
    result = select_slot(lambda a: seen.append(a) or attempts[a], floor=0.3, max_regenerations=5)
    assert seen == [0, 1, 2]
    assert (result.attempt, result.index, result.accepted) == (2, 0, True)
    assert result.score == pytest.approx(0.35) and len(result.all_scores) == 6


def test_gives_up_after_max_regenerations_and_keeps_best_below_ceiling():
    attempts = {0: [0.1, 0.995], 1: [0.25, 0.05]}
    result = select_slot(lambda a: attempts[a], floor=0.3, max_regenerations=1)
    assert (result.attempt, result.index, result.accepted) == (1, 0, False)


def test_floor_relaxes_after_every_three_failures():
    result = select_slot(lambda a: [0.22], floor=0.3, max_regenerations=10, relax_every=3, relax_step=0.05)
    # floors: 0.30 x3 -> 0.25 x3 -> 0.20: accepted at attempt 6
    assert (result.attempt, result.accepted) == (6, True) and result.floor == pytest.approx(0.2)


def test_adapter_starts_as_identity_and_round_trips(tmp_path):
    adapter = EmbeddingAdapter(16)
    x = torch.randn(3, 16)
    assert torch.equal(adapter(x), x)
    assert adapter.num_parameters() == 16 * 16 + 16
    with torch.no_grad():
        adapter.linear.weight.add_(0.01 * torch.randn(16, 16))
    adapter.save(tmp_path / "a", {"base_model": "v1"})
    loaded = EmbeddingAdapter.load(tmp_path / "a")
    assert torch.equal(loaded(x), adapter(x))
    with pytest.raises(FileNotFoundError, match="no adapter"):
        EmbeddingAdapter.load(tmp_path / "missing")
