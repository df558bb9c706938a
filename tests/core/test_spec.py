from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layerfreeze.core.spec import FreezeSpec, parse_spec, spec_sha256
from layerfreeze.errors import SpecError


def issues_of(raw) -> dict[str, object]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return {i.pointer: i for i in info.value.issues}


def test_contract_example_parses():
    spec = parse_spec("""{"rules": [
        {"action": "freeze", "names": ["embeddings", "encoder.layer.[0-5]"]},
        {"action": "unfreeze", "params": ["bias"]},
        {"action": "freeze", "types": ["LayerNorm"]},
        {"action": "freeze", "children": {"of": "", "start": 0, "stop": 3}},
        {"action": "freeze", "until": "layer2"},
        {"action": "freeze", "regex": ["^blocks\\\\.(0|1)\\\\..*"]}
    ], "strict": true}""")
    assert [r.action for r in spec.rules] == ["freeze", "unfreeze", "freeze", "freeze", "freeze", "freeze"]
    assert spec.rules[3].children is not None and spec.rules[3].children.stop == 3
    assert spec.rules[0].selectors() == ("names",)


def test_empty_specs_are_valid_and_hash_alike():
    specs = [parse_spec("{}"), parse_spec(b'{"rules": []}'), parse_spec({"rules": [], "strict": True})]
    assert all(s.rules == [] and s.strict for s in specs)
    assert len({spec_sha256(s) for s in specs}) == 1


def test_hash_ignores_layout_but_not_content():
    a = parse_spec('{"rules":[{"action":"freeze","names":["a"]}]}')
    b = parse_spec('{ "strict": true, "rules": [ {"names": ["a"], "action": "freeze"} ] }')
    c = parse_spec('{"rules":[{"action":"freeze","names":["b"]}]}')
    assert spec_sha256(a) == spec_sha256(b) != spec_sha256(c)


def test_mapping_with_tuples_is_accepted():
    spec = parse_spec({"rules": ({"action": "freeze", "names": ("a", "b")},)})
    assert spec.rules[0].names == ["a", "b"]


def test_unknown_key_points_at_it_and_suggests():
    issues = issues_of({"rules": [{"action": "freeze", "names": ["a"]}, {"action": "freeze", "name": ["x"]}]})
    assert "/rules/1/name" in issues
    assert "names" in issues["/rules/1/name"].suggestions
    issues = issues_of({"rulez": []})
    assert "rules" in issues["/rulez"].suggestions


def test_wrong_types_point_at_the_value():
    issues = issues_of({"rules": [{"action": "freeze", "regex": ["ok", 3]}], "strict": "yes"})
    assert set(issues) == {"/rules/0/regex/1", "/strict"}
    assert "string" in issues["/rules/0/regex/1"].message
    issues = issues_of({"rules": [{"action": "freeze", "children": {"of": "", "start": "1"}}]})
    assert "/rules/0/children/start" in issues


def test_invalid_regex_and_glob():
    issues = issues_of({"rules": [{"action": "freeze", "regex": ["(unclosed"], "names": ["a", "enc.[0-5"]}]})
    assert set(issues) == {"/rules/0/regex/0", "/rules/0/names/1"}
    assert "unbalanced" in issues["/rules/0/names/1"].message
    issues = issues_of({"rules": [{"action": "freeze", "names": ["a..b", "[5-0]", ""]}]})
    assert set(issues) == {"/rules/0/names/0", "/rules/0/names/1", "/rules/0/names/2"}


def test_empty_lists_and_selectorless_rules():
    issues = issues_of({"rules": [{"action": "freeze", "names": []}, {"action": "unfreeze"}]})
    assert "/rules/0/names" in issues and "empty" in issues["/rules/0/names"].message
    assert "/rules/1" in issues and "selector" in issues["/rules/1"].message


def test_action_and_children_shape():
    issues = issues_of({"rules": [{"action": "frezee", "names": ["a"]}]})
    assert "/rules/0/action" in issues
    issues = issues_of({"rules": [{"action": "freeze", "children": {"of": "", "start": 0, "indices": [1]}}]})
    assert "/rules/0/children" in issues
    issues = issues_of({"rules": [{"action": "freeze", "params": ["layer.bias"]}]})
    assert issues["/rules/0/params/0"].suggestions == ("bias",)


def test_not_json_and_not_an_object():
    assert "" in issues_of("{nope")
    assert "" in issues_of("[]")


def test_pointer_escaping():
    issues = issues_of({"rules": [{"action": "freeze", "names": ["a"], "a/b~c": 1}]})
    assert "/rules/0/a~1b~0c" in issues


def test_error_detail_names_the_first_problem():
    with pytest.raises(SpecError) as info:
        parse_spec({"rules": [{"action": "freeze", "regex": ["["]}]})
    assert "/rules/0/regex/0" in info.value.detail


def test_parse_returns_spec_objects_unchanged():
    spec = FreezeSpec()
    assert parse_spec(spec) is spec


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["rules", "strict", "action", "names", "regex", "types", "children", "until",
                         "params", "of", "start", "stop", "indices", "x"]), inner, max_size=5),
    max_leaves=20,
)
SELECTOR_KEYS = ("names", "regex", "params", "until", "children")
rules = st.fixed_dictionaries({"action": st.sampled_from(["freeze", "unfreeze", "x"])},
                              optional={k: json_values for k in SELECTOR_KEYS})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"rules": st.lists(rules, max_size=3)},
                                                    optional={"strict": json_values})))
def test_any_json_gives_a_spec_or_a_spec_error(value):
    for raw in (value, json.dumps(value)):
        try:
            spec = parse_spec(raw)
        except SpecError as exc:
            assert exc.issues and all(i.pointer == "" or i.pointer.startswith("/") for i in exc.issues)
        else:
            assert isinstance(spec, FreezeSpec) and len(spec_sha256(spec)) == 64


def test_pathological_inputs_are_spec_errors():
    for raw in ("[" * 100_000, b"\xff\xfe", '{"rules": [{"action": "freeze", "names": ["\\ud800"]}]}'):
        try:
            spec = parse_spec(raw)
        except SpecError:
            continue
        assert len(spec_sha256(spec)) == 64


def test_a_string_where_a_list_belongs_suggests_the_list():
    issues = issues_of({"rules": [{"action": "freeze", "names": "encoder"}]})
    assert issues["/rules/0/names"].suggestions == ('["encoder"]',)


def test_utf8_byte_order_mark_is_accepted():
    assert parse_spec(b'\xef\xbb\xbf{"rules": []}').rules == []
