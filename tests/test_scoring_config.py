"""ScoringConfig, the one carrier of the scoring options, and replace_options, the one replace() of every option
dataclass: each field refused once in one line, the same options give the same rows whichever way they travel
(keywords, a ScoringConfig, the callback, ImportConfig), and the store block carries exactly the schema's keys."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import SAMPLE_TEXTS, tiny_neox

from trajlab._options import UnknownOptionError, replace_options
from trajlab.hub.config import ImportConfig
from trajlab.lens import score_model
from trajlab.record import RecordConfig, TrajectoryCallback
from trajlab.scoring_config import ScoringConfig
from trajlab.store.meta import SCORING_SCHEMA

TEXTS = [" ".join(SAMPLE_TEXTS), SAMPLE_TEXTS[1], " ".join(SAMPLE_TEXTS[:3])]  # 256, 26, 118 tokens


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"long_texts": "wrap"}, r"long_texts must be one of 'rolling', 'truncate', 'error', got 'wrap'"),
        ({"stride": 4, "long_texts": "truncate"}, r"stride=4 applies only to long_texts='rolling'"),
        ({"stride": 0}, r"stride must be >= 1 token, got 0"),
        ({"stride": 2.5}, r"stride must be an int"),
        ({"max_length": 1}, r"max_length must be an int >= 2"),
        ({"lens_dtype": "fp8"}, r"lens_dtype must be None or one of 'float32', 'bfloat16', 'auto'"),
        ({"prefix_bos": "yes"}, r"prefix_bos must be True or False"),
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
    ],
)
def test_each_field_is_refused_in_one_line(bad, message):
    with pytest.raises(ValueError, match=message) as e:
        ScoringConfig(**bad)
    assert "\n" not in str(e.value)


def test_replace_routes_nested_groups_and_names_unknown_options():
    cfg = ImportConfig(window=3)
    new = replace_options(cfg, long_texts="truncate", window=0, batch_size=2)
    assert (new.window, new.scoring) == (0, ScoringConfig(long_texts="truncate", batch_size=2))
    assert cfg.scoring == ScoringConfig() and cfg.window == 3  # the original is untouched
    with pytest.raises(UnknownOptionError, match=r"unknown ImportConfig option\(s\) \['lond_texts'\]; valid: "
                       r".*long_texts.*window") as e:
        cfg.replace(lond_texts="rolling")
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="stride=3 applies only"):  # the group's own check runs again
        cfg.replace(long_texts="error", stride=3)


def test_the_same_options_give_the_same_rows_however_they_travel(tokenizer):
    model = tiny_neox(ctx=32)
    cfg = ScoringConfig(stride=8, max_length=24, batch_size=2)
    by_keywords, info = score_model(model, tokenizer, TEXTS, stride=8, max_length=24, batch_size=2,
                                    return_info=True)
    by_config = score_model(model, tokenizer, TEXTS, scoring=cfg)
    changed = score_model(model, tokenizer, TEXTS, scoring=ScoringConfig(stride=5), stride=8, max_length=24,
                          batch_size=2)  # keywords change the given config
    np.testing.assert_array_equal(by_keywords, by_config)
    np.testing.assert_array_equal(by_keywords, changed)
    # whole texts: every text is scored on all T - 1 tokens, so the sum matches the tokenizer's count
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) - 1 for t in TEXTS]
    assert info.scoring() == {"long_texts": "rolling", "stride": 8, "window": 24, "n_tokens": lengths,
                              "lens_dtype": "float32"}
    assert list(info.scoring()) == list(SCORING_SCHEMA)  # the store block is the schema, key for key
    with pytest.raises(TypeError, match=r"unknown ScoringConfig option\(s\) \['strid'\]"):
        score_model(model, tokenizer, TEXTS, strid=8)
    with pytest.raises(ValueError, match=r"max_length must be in 2..32 \(the model's context\), got 40"):
        score_model(model, tokenizer, TEXTS, max_length=40)


def test_the_callback_takes_configs_or_todays_keywords():
    by_keywords = TrajectoryCallback("s", probe="default", schedule="every:5", layers_every=2, long_texts="error",
                                     batch_size=4)
    by_configs = TrajectoryCallback(
        "s", RecordConfig(probe="default", schedule="every:5", layers_every=2),
        ScoringConfig(long_texts="error", batch_size=4),
    )
    from_yaml = TrajectoryCallback("s", {"probe": "default", "schedule": "every:5", "layers_every": 2},
                                   {"long_texts": "error", "batch_size": 4})
    assert by_keywords.record == by_configs.record == from_yaml.record
    assert by_keywords.scoring == by_configs.scoring == from_yaml.scoring == ScoringConfig("error", batch_size=4)
    with pytest.raises(TypeError, match=r"unknown TrajectoryCallback option\(s\) \['layer'\]"):
        TrajectoryCallback(layer="all")
    for bad, message in (({"schedule": "every:0"}, "every"), ({"n_texts": 1}, "n_texts"),
                         ({"map_every": -1}, "map_every must be an int >= 0")):
        with pytest.raises(ValueError, match=message):
            RecordConfig(**bad)
