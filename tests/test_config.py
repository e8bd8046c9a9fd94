"""The config: presets, serialisation round trip, and clear errors for impossible values."""

import pytest

from joyful.config import PRESETS, JoyfulConfig
from joyful.errors import JoyfulError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config_that_round_trips(name, tmp_path):
    config = JoyfulConfig.preset(name)
    config.to_json(tmp_path / "c.json")
    assert JoyfulConfig.from_json(tmp_path / "c.json") == config


def test_paper_values_are_the_defaults_except_the_learning_rate():
    c = JoyfulConfig()
    assert (c.eta, c.specific_dim, c.alpha, c.beta, c.temperature) == (0.2, 460, 0.06, 0.3, 0.2)
    assert (c.window_past, c.window_future, c.view1, c.view2) == (6, 6, "FM+EP", "FM+GP")
    assert (c.feature_mask_ratio, c.edge_perturb_ratio, c.proximity_ratio, c.proximity_threshold) == (0.2, 0.2, 0.2, 0.5)
    assert JoyfulConfig.preset("paper").lr == 3e-5 and JoyfulConfig.preset("mosei").beta == 0.1


@pytest.mark.parametrize(
    "field, value",
    [("modalities", "tx"), ("modalities", ""), ("fusion", "sum"), ("view1", "FM+XX"), ("window_past", -2),
     ("feature_mask_ratio", 1.0), ("gnn_layers", 0), ("architecture", "gat"), ("temperature", 0.0)],
)
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(JoyfulError, match=field):
        JoyfulConfig(**{field: value})


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(JoyfulError, match="learning_rate"):
        JoyfulConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(JoyfulError, match="nope"):
        JoyfulConfig.preset("nope")
