"""Vectorised child generators: bit for bit numpy's own spawn, for every seed and index size."""

import numpy as np
import pytest

import harmonia.challenges._streams as streams


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31, 2**32 - 1, 2**32, 2**40 + 3])
def test_generators_equal_numpys(seed):
    indices = [0, 1, 2, 999, 2**31, 2**32 - 1, 2**32, 2**33 + 5]
    for i, gens in zip(indices, streams.spawned_generators(seed, indices, 4)):
        ref = np.random.default_rng([seed, i]).spawn(4)
        assert [g.bit_generator.state for g in gens] == [g.bit_generator.state for g in ref]
        assert np.array_equal(gens[3].random(5), ref[3].random(5))
    for i, gen in zip(indices, streams.sample_generators(seed, indices)):
        assert gen.bit_generator.state == np.random.default_rng([seed, i]).bit_generator.state


def test_the_vectorised_path_is_the_one_taken():
    assert streams._agrees_with_numpy()
    direct = streams._hashed_generators(3, [4, 5], 2)
    assert [g.bit_generator.state for g in direct[1]] == [g.bit_generator.state for g in np.random.default_rng([3, 5]).spawn(2)]


def test_no_indices_no_generators():
    assert streams.spawned_generators(0, [], 3) == [] and streams.sample_generators(0, []) == []


def test_precomputed_words_answer_only_pcg64():
    words = streams._Words(np.zeros(4, np.uint64))
    with pytest.raises(ValueError, match="PCG64's own request"):
        words.generate_state(8, np.uint32)


def test_numpys_own_path_when_the_hash_disagrees(monkeypatch):
    # what a numpy release that seeded differently would get: numpy's generators, not ours
    monkeypatch.setattr(streams, "_agrees_with_numpy", lambda: False)
    monkeypatch.setattr(streams, "_hashed_generators", lambda *a: pytest.fail("the vectorised path was taken"))
    gens = streams.spawned_generators(3, [4, 5], 2)
    assert gens[1][1].random() == np.random.default_rng([3, 5]).spawn(2)[1].random()
    assert streams.sample_generators(3, [4])[0].random() == np.random.default_rng([3, 4]).random()
