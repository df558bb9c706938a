from __future__ import annotations

import json

import pytest
from layerfreeze_client import Spec
from layerfreeze_client._spec import spec_json


def test_builder_produces_the_contract_example() -> None:
    spec = (
        Spec()
        .freeze(names=["embeddings", "encoder.layer.[0-5]"])
        .unfreeze(params=["bias"])
        .freeze(types=["LayerNorm"])
        .freeze(children={"of": "", "start": 0, "stop": 3})
        .freeze(until="layer2")
        .freeze(regex=["^blocks\\.(0|1)\\..*"])
    )
    assert spec.to_dict() == {
        "rules": [
            {"action": "freeze", "names": ["embeddings", "encoder.layer.[0-5]"]},
            {"action": "unfreeze", "params": ["bias"]},
            {"action": "freeze", "types": ["LayerNorm"]},
            {"action": "freeze", "children": {"of": "", "start": 0, "stop": 3}},
            {"action": "freeze", "until": "layer2"},
            {"action": "freeze", "regex": ["^blocks\\.(0|1)\\..*"]},
        ],
        "strict": True,
    }
    assert json.loads(spec.to_json()) == spec.to_dict()
    assert Spec.from_dict(spec.to_dict()) == spec


def test_selectors_combine_in_one_rule_and_accept_single_strings() -> None:
    spec = Spec(strict=False).freeze(names="encoder", params=["weight"], types="Linear")
    assert spec.to_dict() == {
        "rules": [{"action": "freeze", "names": ["encoder"], "params": ["weight"], "types": ["Linear"]}],
        "strict": False,
    }


def test_children_shorthands() -> None:
    assert Spec().freeze(children=slice(None, -1)).rules[0]["children"] == {"of": "", "stop": -1}
    assert Spec().freeze(children=[0, 2]).rules[0]["children"] == {"of": "", "indices": [0, 2]}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({}, ValueError), ({"name": ["x"]}, TypeError), ({"names": []}, ValueError), ({"until": 3}, ValueError),
     ({"params": [1]}, ValueError), ({"children": slice(0, 4, 2)}, ValueError)],
)
def test_malformed_rules_fail_at_once(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        Spec().freeze(**kwargs)


def test_every_spec_form_becomes_the_same_json(tmp_path) -> None:
    spec = Spec().freeze(names=["0"])
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    forms = [spec, spec.to_dict(), spec.to_json(), spec.to_json().encode(), path]
    assert {json.dumps(json.loads(spec_json(f)), sort_keys=True) for f in forms} == {
        json.dumps(spec.to_dict(), sort_keys=True)
    }
    assert spec_json(None) == "{}"
