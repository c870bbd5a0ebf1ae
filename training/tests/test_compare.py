from training.compare import tied_deciles


def _deciles(costs):
    return [{"decile": i + 1, "mean_bitflops": c, "top1": 0.5} for i, c in enumerate(costs)]


def test_tied_deciles_counts_the_longest_stretch_of_equal_cost():
    assert tied_deciles(_deciles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])) == 1
    assert tied_deciles(_deciles([9.3] * 9 + [9.34])) == 9
    assert tied_deciles(_deciles([1, 2, 2, 2, 3, 3, 4, 5, 6, 7])) == 3


def test_cost_order_sorts_by_cost_and_mixes_ties():
    import numpy as np

    from training.evaluate import cost_order

    bf = np.array([5.0] * 500 + [1.0] * 500 + [9.0])
    order = cost_order(bf)
    assert (np.diff(bf[order]) >= 0).all() and order[-1] == 1000
    # the 500 tied cheapest images come in a shuffled, reproducible order, not in storage order
    assert not (np.diff(order[:500]) > 0).all() and (order == cost_order(bf)).all()
