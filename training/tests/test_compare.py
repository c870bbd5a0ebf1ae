import pytest

from training.compare import static_line, tied_deciles


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


# static runs at 2, 3, 4, 5 bits: (Bit-FLOPs in G, top-1); the 5-bit run scores below the 4-bit one
STATIC = [(0.615, 0.73), (0.817, 0.745), (1.100, 0.79), (1.463, 0.778)]


@pytest.mark.parametrize("bitflops, expected", [
    (0.817, 0.745),                                     # on a static run
    (0.9585, 0.7675),                                   # halfway between 3 and 4 bits
    (1.3, 0.79),                                        # past 4 bits: the 5-bit run is off the frontier
    (3.0, 0.79),                                        # past the costliest: the best static run
    (0.5, None),                                        # cheaper than every static run: no line to compare with
])
def test_static_line_interpolates_on_the_frontier(bitflops, expected):
    got = static_line(STATIC, bitflops)
    assert got == (None if expected is None else pytest.approx(expected))
    assert static_line([], 1.0) is None


def test_seed_groups_give_mean_and_sample_sd_per_configuration():
    from training.compare import seed_groups, seeds_markdown

    row = lambda run, top1, what="static 4-bit, LSQ activations": {  # noqa: E731
        "run": run, "what": what, "top1": top1, "bitflops_mean": 1.1e9, "epochs": 60}
    groups = seed_groups([row("w4_s0", 0.90), row("w4_s1", 0.91), row("w4_s2", 0.92), row("w4_s0_long", 0.925),
                          row("fp_s0", 0.92, "full precision")])
    g = {x["configuration"]: x for x in groups}
    assert g["w4"]["seeds"] == 3 and g["w4"]["runs"] == ["w4_s0", "w4_s1", "w4_s2"]
    assert g["w4"]["top1_mean"] == pytest.approx(0.91) and g["w4"]["top1_sd"] == pytest.approx(0.01)
    assert g["w4_s0_long"]["seeds"] == 1 and g["w4_s0_long"]["top1_sd"] is None  # not a seed of w4
    md = seeds_markdown(groups)
    assert "| w4 | static 4-bit, LSQ activations | 60 | 3 | 91.00 ± 1.00% | 1.100 G |" in md
    assert "| fp | full precision | 60 | 1 | 92.00% | 1.100 G |" in md
