"""Observers: scales, signedness, percentile clipping."""

import torch

from flexiq_search.quant.observers import create_observer


def test_minmax_unsigned_after_relu():
    obs = create_observer("minmax")
    obs.update(torch.tensor([[0.0, 1.0], [2.0, 5.1]]), channel_dim=1)
    params = obs.params()
    assert not params.signed and abs(params.scale - 5.1 / 255) < 1e-9
    assert torch.allclose(params.channel_absmax, torch.tensor([2.0, 5.1]))
    assert torch.allclose(params.channel_mean_square, torch.tensor([2.0, (1 + 5.1 ** 2) / 2]))


def test_minmax_signed_is_symmetric():
    obs = create_observer("minmax")
    obs.update(torch.tensor([[-3.0, 1.0]]), channel_dim=1)
    assert obs.params().signed and abs(obs.params().scale - 3 / 127) < 1e-9


def test_percentile_clips_rare_outliers():
    x = torch.randn(1, 4, 100, 100)
    x[0, 0, 0, 0] = 1000.0
    minmax, pct = create_observer("minmax"), create_observer("percentile", percentile=99.9)
    for obs in (minmax, pct):
        obs.update(x, channel_dim=1)
    assert minmax.params().scale == 1000.0 / 127
    assert pct.params().scale < 5.0 / 127


def test_mse_clip_saturates_a_heavy_tail_where_that_lowers_the_error():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 64, 64) ** 3  # heavy-tailed: a few large values stretch min/max steps
    obs = create_observer("mse")
    obs.update(x, channel_dim=1)
    top = float(x.abs().max())
    clip = obs.params().scale * 127
    assert clip < 0.95 * top

    def error(clip_value):
        step = clip_value / 127
        return float((x - (x / step).round().clamp(-127, 127) * step).square().mean())

    assert error(clip) < error(top) and error(clip) <= error(clip * 0.8) and error(clip) <= error(clip * 1.2)


def test_mse_clip_of_values_without_outliers_is_near_their_maximum():
    x = torch.rand(1, 2, 100, 100)  # uniform [0, 1): nothing worth saturating
    obs = create_observer("mse")
    obs.update(x, channel_dim=1)
    assert not obs.params().signed and obs.params().scale * 255 > 0.97
