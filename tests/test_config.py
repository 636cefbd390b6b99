"""Versioned configs: round trip, unknown types and versions refused, validation errors."""

import pytest

from flexiq_search.config import QuantConfig, config_from_dict, config_to_dict


def test_round_trip():
    config = QuantConfig(group_size=4, observer="percentile", extraction="naive", budget="per-layer",
                         activation_shift="dynamic")
    payload = config_to_dict(config)
    assert payload["_type"] == "QuantConfig" and payload["_version"] == 4
    assert config_from_dict(payload) == config


def test_version_1_is_upgraded_with_static_activation_shifts():
    stored = {"_type": "QuantConfig", "_version": 1, "_data": {"group_size": 4}}
    assert config_from_dict(stored) == QuantConfig(group_size=4, activation_shift="static")


def test_version_3_is_upgraded_with_depthwise_convs_eligible():
    stored = {"_type": "QuantConfig", "_version": 3, "_data": {"group_size": 4, "bias_correction": True}}
    assert config_from_dict(stored) == QuantConfig(group_size=4, bias_correction=True, keep_depthwise_int8=False)


def test_stored_search_configs_of_version_1_keep_the_quantization_they_ran_with():
    from flexiq_search.config import RECOMMENDED_QUANT, SearchConfig

    stored = {"_type": "SearchConfig", "_version": 1, "_data": {"model": "resnet20", "dataset": "digits"}}
    old = config_from_dict(stored)
    assert (old.group_size, old.observer, old.activation_shift, old.bias_correction, old.keep_depthwise_int8) == (
        8, "minmax", "static", False, False)
    new = SearchConfig(model="resnet20", dataset="digits")
    assert new.quant_config() == QuantConfig(**RECOMMENDED_QUANT)
    assert config_from_dict(config_to_dict(new)) == new


@pytest.mark.parametrize("payload, message", [
    ({"_type": "Evil", "_version": 1, "_data": {}}, "unknown config type"),
    ({"_type": "QuantConfig", "_version": 99, "_data": {}}, "version 99"),
    ({"_type": "QuantConfig", "_version": 1, "_data": {"bogus": 1}}, "unknown keys"),
    ({"group_size": 8}, "not a versioned config"),
])
def test_bad_payloads_are_refused(payload, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(payload)


@pytest.mark.parametrize("kwargs", [
    {"group_size": 0}, {"observer": "kmeans"}, {"extraction": "top"}, {"budget": "local"}, {"percentile": 0},
    {"activation_shift": "live"},
])
def test_validation(kwargs):
    with pytest.raises(ValueError):
        QuantConfig(**kwargs)


def test_stored_search_configs_of_version_4_compute_where_they_did():
    stored = {"_type": "SearchConfig", "_version": 4, "_data": {"model": "resnet20", "dataset": "digits"}}
    assert config_from_dict(stored).device == "auto"  # CUDA when present: on older versions' CPU machines, the CPU
    with pytest.raises(ValueError, match="device must name a device"):
        config_from_dict({"_type": "SearchConfig", "_version": 5,
                          "_data": {"model": "resnet20", "dataset": "digits", "device": ""}})
