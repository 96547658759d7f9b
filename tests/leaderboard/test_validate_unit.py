"""``medrobust.leaderboard.validate`` rule by rule, on the committed result card of the shipped zoo entry
``mitdb-intra/cnn1-ce`` (a real evaluation of the ``mitdb-intra`` task, v1) and hand-edited copies of it.

No evaluation runs here (the whole file takes about a second): every refusal is checked by its exact one-line
message, every acceptance at the boundary of its rule.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from medrobust import zoo
from medrobust.leaderboard import load_task
from medrobust.leaderboard.tasks import parse_task
from medrobust.leaderboard.validate import CARD_FORMAT, Validation, _get, _ratio_problems, _same, match_row, validate

ENTRY = zoo.get("mitdb-intra/cnn1-ce")
CARD = json.loads(ENTRY.eval_card.read_text()) if ENTRY.eval_card else {}
W = ENTRY.weights_sha256
TASK = load_task("mitdb-intra")
FP = TASK.dataset["fingerprint"]
IDX = TASK.subset["indices_sha256"]
RESERVED = parse_task({**TASK.raw, "threats": [*TASK.raw["threats"][:2], {
    "id": "l2-uap", "title": "reserved", "status": "not-evaluated", "reason": "reserved until the protocol has it"}]},
    source="mitdb-intra with a reserved row")
"""The task with its l2-uap row reserved (``not-evaluated``), as version 1 shipped it."""


def card(**edits: Any) -> dict[str, Any]:
    """A deep copy of the committed card with ``edits`` ({"dotted.path": value}; value ``...`` deletes)."""
    c = copy.deepcopy(CARD)
    for path, value in edits.items():
        *head, last = path.split(".")
        cur = c
        for part in head:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        if value is ...:
            del cur[last]
        else:
            cur[last] = value
    return c


def problems(c: dict[str, Any], task: Any = TASK, **kw: Any) -> list[str]:
    kw.setdefault("weights_sha256", W)
    return validate(c, task, **kw).problems


def task_with(**changes: Any) -> Any:
    """The mitdb-intra task with top-level ``changes`` (``dataset``/``subset`` merged key by key)."""
    raw = copy.deepcopy(TASK.raw)
    for key in ("dataset", "subset"):
        raw[key] = {**raw[key], **changes.pop(key, {})}
    raw.update(changes)
    return parse_task(raw, source="t.yaml")


# ---------------------------------------------------------------------------------------------- the valid card
def test_the_committed_card_is_valid_for_its_row() -> None:
    assert CARD["format"] == CARD_FORMAT == "medrobust-result-card/1"
    v = validate(CARD, TASK, weights_sha256=W)
    assert v.problems == [] and v.ok is True
    assert v.task is TASK and v.row is TASK.threat("linf") and v.flags == []
    v = validate(CARD, TASK, weights_sha256=W, threat="linf")
    assert v.ok and v.row.id == "linf"


def test_validation_ok_is_no_problem() -> None:
    assert Validation(TASK, None).ok is True
    assert Validation(TASK, None, ["x"]).ok is False


# ---------------------------------------------------------------------------------------------- helpers
def test_get_follows_a_dotted_path_and_stops_at_non_mappings() -> None:
    d = {"a": {"b": {"c": 3}, "n": None}, "x": 1, "l": [1]}
    assert _get(d, "a.b.c") == 3 and _get(d, "a.b") == {"c": 3} and _get(d, "x") == 1
    assert _get(d, "a.n") is None and _get(d, "a.z") is None and _get(d, "z") is None
    assert _get(d, "x.y") is None and _get(d, "l.0") is None and _get(d, "a.b.c.d") is None


def test_same_compares_json_values() -> None:
    assert _same(30, 30.0) and _same(0.1, 0.1) and _same({"a": [1, 2]}, {"a": [1, 2.0]}) and _same((1, 2), [1, 2])
    assert _same(True, True) and _same(False, False) and _same("x", "x") and _same(None, None) and _same([], [])
    assert not _same(True, 1) and not _same(1, True) and not _same(True, False) and not _same(False, 0)
    # numbers: relative tolerance 1e-12, no absolute tolerance
    assert _same(1.0, 1.0 + 1e-13) and not _same(1.0, 1.0 + 1e-11) and not _same(0.0, 1e-300)
    assert not _same(1, 2) and not _same(0.5, 1.0) and not _same(0, 1)
    assert not _same({"a": 1}, {"a": 2}) and not _same({"a": 1}, {"b": 1}) and not _same({"a": 1}, {"a": 1, "b": 2})
    assert not _same([1], [1, 2]) and not _same([1, 2], [2, 1]) and not _same([1, 2], [1]) and not _same("1", 1)
    assert not _same({"a": 1}, [("a", 1)]) and not _same([1], {1: 1}) and not _same("a", "b")


# ---------------------------------------------------------------------------------------------- format
def test_a_card_of_another_format_is_refused_alone() -> None:
    for fmt in ("medrobust-checkpoint/1", None):
        c = card(format=fmt)
        v = validate(c, TASK, weights_sha256=None)
        assert v.problems == [f"format: {fmt!r} is not a medrobust-result-card/1 result card; pass the card.json "
                              "written by medrobust evaluate."]
        assert v.row is None and v.flags == [] and v.task is TASK
    assert len(problems({})) == 1 and problems({})[0].startswith("format: None is not")


# ---------------------------------------------------------------------------------------------- data
FIX = "evaluate on the task's data (see `medrobust leaderboard tasks mitdb-intra`)"


def test_dataset_name_and_split() -> None:
    assert problems(card(**{"data.name": "cinc2017"})) == [
        f"data.name: the card has 'cinc2017', task mitdb-intra needs 'mitdb'; {FIX}."]
    assert problems(card(**{"data.split": "val"})) == [
        f"data.split: the card has 'val', task mitdb-intra needs 'test'; {FIX}."]
    assert problems(card(**{"data.split": ...})) == [
        f"data.split: the card has None, task mitdb-intra needs 'test'; {FIX}."]


def test_dataset_options_the_card_records_must_match() -> None:
    assert problems(card(**{"data.options.scheme": "inter"})) == [
        "data.options.scheme: the card has 'inter', task mitdb-intra needs 'intra'; load the dataset with "
        "scheme='intra'."]
    assert problems(card(**{"data.options.format": "raw"}))[0].startswith("data.options.format: the card has 'raw'")
    # an option the card does not record (a loader may name it otherwise) is left to the fingerprint
    assert problems(card(**{"data.options.scheme": ...})) == []
    assert problems(card(**{"data.options": ...})) == []
    assert problems(card(**{"data.options": None})) == []
    # numbers compare as numbers
    t = task_with(dataset={"options": {"format": "kachuee", "scheme": "intra", "fs": 125}})
    assert problems(card(), task=t) == []
    assert problems(card(**{"data.options.fs": 360.0}), task=t) == [
        "data.options.fs: the card has 360.0, task mitdb-intra needs 125; load the dataset with fs=125."]
    # a task without options accepts any
    t = task_with(dataset={"options": None})
    assert problems(card(**{"data.options.scheme": "inter"}), task=t) == []


def test_data_fingerprint() -> None:
    c = card(**{"data.fingerprint": "0123456789abcdef" * 4})
    assert problems(c) == [f"data.fingerprint: the card's data (0123456789ab...) is not the task's ({FP[:12]}...); "
                           "evaluate on the published files of mitdb (unmodified)."]
    assert problems(card(**{"data.fingerprint": ...}))[0].startswith("data.fingerprint: the card's data (None...)")
    # a task not pinned yet has no fingerprint to compare
    raw = copy.deepcopy(TASK.raw)
    del raw["dataset"]["fingerprint"]
    assert problems(c, task=parse_task(raw)) == []


# ---------------------------------------------------------------------------------------------- subset
SUB_FIX = "evaluate with --limit 2000 --seed 0"


def test_subset_selection_limit_and_seed() -> None:
    assert problems(card(**{"data.evaluated.selection.limit": 1000})) == [
        "data.evaluated.selection: the card's subset is limit=1000 seed=0, task mitdb-intra needs limit=2000 seed=0; "
        f"{SUB_FIX}."]
    assert problems(card(**{"data.evaluated.selection.seed": 1})) == [
        "data.evaluated.selection: the card's subset is limit=2000 seed=1, task mitdb-intra needs limit=2000 seed=0; "
        f"{SUB_FIX}."]
    assert problems(card(**{"data.evaluated.selection": ...})) == [
        "data.evaluated.selection: the card's subset is limit=None seed=None, task mitdb-intra needs limit=2000 "
        f"seed=0; {SUB_FIX}."]


def test_subset_indices_hash() -> None:
    c = card(**{"data.evaluated.indices_sha256": "fedcba9876543210" * 4})
    assert problems(c) == [f"data.evaluated.indices_sha256: the card evaluated other samples (fedcba987654...) than "
                           f"task mitdb-intra ({IDX[:12]}...); {SUB_FIX}."]
    raw = copy.deepcopy(TASK.raw)
    del raw["subset"]["indices_sha256"]
    assert problems(c, task=parse_task(raw)) == []


def test_a_limit_of_at_least_the_split_size_is_the_whole_split() -> None:
    whole = "evaluate the whole split (no --limit)"
    bad = "f" * 64
    for limit in (2000, 2001):   # n_total == limit, and a limit above the split size
        t = task_with(dataset={"n_total": limit}, subset={"limit": limit})
        # the selection is not compared for the whole split (a card of the whole split records no limit)
        assert problems(card(**{"data.evaluated.selection": {"limit": None, "seed": 5}}), task=t) == []
        assert problems(card(**{"data.evaluated.indices_sha256": bad}), task=t)[0].endswith(f"; {whole}.")
    t = task_with(dataset={"n_total": 2001}, subset={"limit": 2000})   # one sample short of the split: a subset
    assert problems(card(**{"data.evaluated.selection.limit": None}), task=t)[0].endswith(f"; {SUB_FIX}.")
    t = task_with(subset={"limit": None})
    assert problems(card(**{"data.evaluated.indices_sha256": bad}), task=t)[0].endswith(f"; {whole}.")
    raw = copy.deepcopy(TASK.raw)
    del raw["dataset"]["n_total"]   # size unknown: a limit is a subset
    t = parse_task(raw)
    assert problems(card(), task=t) == []
    assert problems(card(**{"data.evaluated.selection.seed": 3}), task=t)[0].startswith("data.evaluated.selection:")


# ---------------------------------------------------------------------------------------------- protocol
def test_protocol_version() -> None:
    assert problems(card(**{"protocol.version": 2})) == [
        "protocol.version: the card was evaluated under protocol version 2, task linf needs version 1; re-evaluate "
        "with a medrobust release of protocol version 1."]


def test_each_compared_protocol_setting_is_one_line() -> None:
    ps = problems(card(**{"protocol.eps": [0.01, 0.05, 0.2], "protocol.seed": 1}))
    assert ps == ["protocol.eps: the card has [0.01, 0.05, 0.2], threat row 'linf' needs [0.01, 0.05, 0.1]; evaluate "
                  "with the task's protocol (`medrobust leaderboard tasks`).",
                  "protocol.seed: the card has 1, threat row 'linf' needs 0; evaluate with the task's protocol "
                  "(`medrobust leaderboard tasks`)."]
    # the last compared key alone (a check that stopped at the first equal key would miss it)
    assert [p.split(":")[0] for p in problems(card(**{"protocol.minimal_eps": True}))] == ["protocol.minimal_eps"]
    # logistics are not compared
    assert problems(card(**{"protocol.batch_size": 7, "protocol.n_examples": 0})) == []


def test_a_card_without_protocol_differs_in_every_compared_setting() -> None:
    ps = problems(card(protocol=...))
    assert [p.split(":")[0] for p in ps] == [f"protocol.{k}" for k in ("version", "attacks", "eps", "norm", "eps_mode",
                                                                       "bounds", "mode", "seed", "minimal_eps")]
    assert ps[0].startswith("protocol.version: the card was evaluated under protocol version None, task linf")
    assert problems(card(protocol=None)) == ps


def _snr_card() -> dict[str, Any]:
    """The card as if evaluated under the snr-smooth row (its protocol and radii)."""
    row = TASK.threat("snr-smooth")
    c = card()
    c["protocol"] = {**c["protocol"], **row.expected()}
    for r, e in zip(c["results"], row.protocol.eps):
        r["eps"] = e
    return c


def test_match_row_finds_the_open_row_the_card_carries() -> None:
    c = _snr_card()
    row, diff = match_row(c, TASK)
    assert row is TASK.threat("snr-smooth") and diff == []
    v = validate(c, TASK, weights_sha256=W)
    assert v.ok and v.row.id == "snr-smooth"
    # naming the other row gives that row's differences
    row, diff = match_row(c, TASK, threat="linf")
    assert row.id == "linf" and [d.split(":")[0] for d in diff] == ["protocol.attacks", "protocol.eps",
                                                                    "protocol.eps_mode"]


def test_match_row_without_a_match_reports_the_row_of_the_cards_eps_mode() -> None:
    c = _snr_card()
    c["protocol"]["eps"] = [20.0, 30.0, 45.0]
    row, diff = match_row(c, TASK)
    assert row.id == "snr-smooth" and diff == [
        "protocol.eps: the card has [20.0, 30.0, 45.0], threat row 'snr-smooth' needs [20.0, 30.0, 40.0]; evaluate "
        "with the task's protocol (`medrobust leaderboard tasks`)."]
    # an eps_mode of no row: the first open row's differences
    c = card(**{"protocol.eps_mode": "rel"})
    row, diff = match_row(c, TASK)
    assert row.id == "linf" and [d.split(":")[0] for d in diff] == ["protocol.eps_mode"]


def test_a_named_row_without_protocol_is_refused() -> None:
    row, diff = match_row(CARD, RESERVED, threat="l2-uap")
    assert row is None and len(diff) == 1
    assert diff[0] == f"threat row 'l2-uap' of task mitdb-intra is not-evaluated: {RESERVED.threat('l2-uap').reason}"
    v = validate(CARD, RESERVED, weights_sha256=W, threat="l2-uap")
    assert v.row is None and v.problems == diff   # no row: the results are not compared with any radii


# ---------------------------------------------------------------------------------------------- weights, precision
def test_weights_hash() -> None:
    assert problems(CARD, weights_sha256=None) == [
        "weights: no checkpoint given to check the card's weights against; pass --checkpoint DIR or --zoo ID."]
    other = "abcdef0123456789" * 4
    assert problems(CARD, weights_sha256=other) == [
        f"model.card.weights_sha256: the card measured weights {W[:12]}..., the checkpoint holds abcdef012345...; "
        "evaluate this checkpoint (or pass the checkpoint that was evaluated)."]
    assert problems(card(**{"model.card.weights_sha256": ...}))[0].startswith(
        "model.card.weights_sha256: the card measured weights None..., the checkpoint holds")


def test_precision() -> None:
    assert problems(card(precision={"requested": "bf16", "used": "bf16"})) == [
        "precision.used: the card was evaluated in bf16; the board compares float32 evaluations: re-evaluate with "
        "--precision fp32."]
    assert problems(card(precision={"requested": "bf16", "used": "fp32"})) == []
    assert problems(card(precision={"requested": "fp32"})) == []


# ---------------------------------------------------------------------------------------------- numbers
RATIO_FIX = "the card must give every accuracy as numerator and denominator (re-evaluate with medrobust evaluate)."


def test_ratio_must_be_a_mapping_of_counts() -> None:
    assert _ratio_problems("w", None, 4) == [f"w: missing; {RATIO_FIX}"]
    assert _ratio_problems("w", [1, 2], 4) == [f"w: missing; {RATIO_FIX}"]
    assert _ratio_problems("w", {"value": 0.5}, 4) == [f"w.numerator: missing or not a count (None); {RATIO_FIX}",
                                                       f"w.denominator: missing or not a count (None); {RATIO_FIX}"]
    for bad in (True, False, 1.0, -1, "1"):
        assert _ratio_problems("w", {"numerator": bad, "denominator": 4, "value": 0.25}, 4) == [
            f"w.numerator: missing or not a count ({bad!r}); {RATIO_FIX}"]
    assert _ratio_problems("w", {"numerator": 1, "denominator": -4, "value": -0.25}, None) == [
        f"w.denominator: missing or not a count (-4); {RATIO_FIX}"]


def test_ratio_counts_at_their_bounds() -> None:
    assert _ratio_problems("w", {"numerator": 0, "denominator": 4, "value": 0.0}, 4) == []
    assert _ratio_problems("w", {"numerator": 4, "denominator": 4, "value": 1.0}, 4) == []
    assert _ratio_problems("w", {"numerator": 4, "denominator": 4, "value": 1}, 4) == []
    assert _ratio_problems("w", {"numerator": 1, "denominator": 1, "value": 1.0}, 1) == []
    assert _ratio_problems("w", {"numerator": 5, "denominator": 4, "value": 1.25}, 4) == [
        "w.value: 1.25 is not 5/4; the card was edited: re-evaluate."]
    # no denominator to divide by: an empty evaluation has no value to check
    assert _ratio_problems("w", {"numerator": 0, "denominator": 0, "value": None}, 0) == []


def test_ratio_value_must_be_the_quotient() -> None:
    assert _ratio_problems("w", {"numerator": 1, "denominator": 3, "value": 1 / 3}, 3) == []
    assert _ratio_problems("w", {"numerator": 1, "denominator": 3, "value": 0.3333333333}, 3) == []   # 3e-11 off
    # the tolerance is absolute (1e-9), also at 0 where a relative one would demand exactly 0.0
    assert _ratio_problems("w", {"numerator": 0, "denominator": 3, "value": 5e-10}, 3) == []
    assert _ratio_problems("w", {"numerator": 0, "denominator": 3, "value": 2e-9}, 3) == [
        "w.value: 2e-09 is not 0/3; the card was edited: re-evaluate."]
    for bad in (0.33, 1 / 3 + 1e-8, 1 / 3 + 0.5, None, "0.3333"):
        assert _ratio_problems("w", {"numerator": 1, "denominator": 3, "value": bad}, 3) == [
            f"w.value: {bad!r} is not 1/3; the card was edited: re-evaluate."]


def test_ratio_denominator_is_the_number_evaluated() -> None:
    assert _ratio_problems("w", {"numerator": 1, "denominator": 5, "value": 0.2}, 4) == [
        "w.denominator: 5 is not the number of evaluated samples (4); the card is inconsistent: re-evaluate."]
    assert _ratio_problems("w", {"numerator": 1, "denominator": 5, "value": 0.2}, None) == []
    both = _ratio_problems("w", {"numerator": 6, "denominator": 5, "value": 0.2}, 4)
    assert [p.split(":")[0] for p in both] == ["w.denominator", "w.value"]


def test_results_of_the_card() -> None:
    assert problems(card(**{"clean.accuracy.value": 0.9})) == [
        "clean.accuracy.value: 0.9 is not 1956/2000; the card was edited: re-evaluate."]
    assert problems(card(**{"clean.accuracy": ...})) == [f"clean.accuracy: missing; {RATIO_FIX}"]
    assert problems(card(**{"results.1.robust_accuracy.value": 0.5})) == [
        "results[1].robust_accuracy.value: 0.5 is not 68/2000; the card was edited: re-evaluate."]
    assert problems(card(**{"results.2.robust_accuracy.denominator": 1999})) == [
        "results[2].robust_accuracy.denominator: 1999 is not the number of evaluated samples (2000); the card is "
        "inconsistent: re-evaluate."]   # 0/1999 is still the recorded value 0.0
    assert problems(card(**{"results.0.robust_accuracy": ...})) == [f"results[0].robust_accuracy: missing; {RATIO_FIX}"]
    # the number evaluated is read from data.evaluated.n
    ps = problems(card(**{"data.evaluated.n": 1999}))
    assert len(ps) == 4 and all("is not the number of evaluated samples (1999)" in p for p in ps)
    assert ps[0].startswith("clean.accuracy.denominator: 2000") and ps[3].startswith("results[2].robust_accuracy.")


def test_results_follow_the_rows_radii() -> None:
    c = card()
    c["results"].pop()
    assert problems(c) == ["results: expected one entry per ε [0.01, 0.05, 0.1], got 2; re-evaluate."]
    assert problems(card(results=...)) == ["results: expected one entry per ε [0.01, 0.05, 0.1], got None; "
                                           "re-evaluate."]
    assert problems(card(results={"0.01": 1})) == ["results: expected one entry per ε [0.01, 0.05, 0.1], got "
                                                   "{'0.01': 1}; re-evaluate."]
    assert problems(card(**{"results.2.eps": 0.2})) == ["results[2].eps: 0.2 is not the task's ε 0.1; re-evaluate."]
    assert problems(card(**{"results.0.eps": ...})) == ["results[0].eps: None is not the task's ε 0.01; re-evaluate."]
    # a missing clean accuracy and a missing results list are both reported
    ps = problems(card(**{"clean.accuracy": ..., "results": ...}))
    assert [p.split(":")[0] for p in ps] == ["clean.accuracy", "results"]


def test_results_without_a_row_are_checked_for_counts_only() -> None:
    c = card()
    c["results"] = c["results"][:1]
    c["results"][0]["eps"] = 7.0
    v = validate(c, RESERVED, weights_sha256=W, threat="l2-uap")
    assert v.problems[1:] == []
    c["results"][0]["robust_accuracy"]["value"] = 0.5
    v = validate(c, RESERVED, weights_sha256=W, threat="l2-uap")
    assert v.problems[1:] == ["results[0].robust_accuracy.value: 0.5 is not 1785/2000; the card was edited: "
                              "re-evaluate."]
    c["results"] = None
    assert validate(c, RESERVED, weights_sha256=W, threat="l2-uap").problems[1:] == [
        "results: expected one entry per ε [], got None; re-evaluate."]


# ---------------------------------------------------------------------------------------------- all together
def test_problems_come_in_card_order_one_line_each() -> None:
    c = card(**{"data.name": "x", "data.evaluated.selection.seed": 9, "protocol.seed": 9, "precision": {"used": "fp16"},
                "results.0.eps": 0.02})
    ps = validate(c, TASK, weights_sha256="0" * 64).problems
    assert [p.split(":")[0] for p in ps] == ["data.name", "data.evaluated.selection", "protocol.seed",
                                             "model.card.weights_sha256", "precision.used", "results[0].eps"]
    assert all("\n" not in p for p in ps)


def test_flags_are_kept_not_refused() -> None:
    flag = {"code": "zero_gradients", "message": "input gradients are zero"}
    v = validate(card(flags=[flag, "not a flag", 3]), TASK, weights_sha256=W)
    assert v.ok and v.flags == [flag] and type(v.flags[0]) is dict
    assert validate(card(flags=None), TASK, weights_sha256=W).flags == []
    assert validate(card(flags=...), TASK, weights_sha256=W).flags == []


@pytest.mark.parametrize("name", ["cnn1-nsr", "cnn1-pgd-at", "mlp1-ce"])
def test_the_other_committed_cards_validate_too(name: str) -> None:
    e = zoo.get(f"mitdb-intra/{name}")
    assert e.eval_card is not None
    c = json.loads(e.eval_card.read_text())
    assert validate(c, TASK, weights_sha256=e.weights_sha256).problems == []
    assert validate(c, TASK, weights_sha256=W).problems[0].startswith("model.card.weights_sha256:")


# ---------------------------------------------------------------------------------------------- malformed sections
def test_card_sections_of_the_wrong_type_are_problems_not_crashes() -> None:
    """Bug fixed: a ``results`` entry, ``protocol``, ``data.evaluated.selection`` or ``flags`` of the wrong JSON
    type raised AttributeError/TypeError from inside validate (a traceback from ``medrobust leaderboard add``)."""
    ps = problems(card(results=[0.9, CARD["results"][1], None]))
    assert ps == ["results[0]: 0.9 is not a result entry (eps, robust_accuracy); re-evaluate.",
                  "results[2]: None is not a result entry (eps, robust_accuracy); re-evaluate."]
    assert problems(card(protocol=["pgd"])) == problems(card(protocol=...))
    assert problems(card(**{"data.evaluated.selection": [2000, 0]})) == problems(
        card(**{"data.evaluated.selection": ...}))
    assert problems(card(**{"data.options": ["scheme"]})) == []
    t = task_with(dataset={"options": {"format": "kachuee", "scheme": "intra"}})
    assert problems(card(**{"data.options": "scheme"}), task=t) == []
    for flags in (5, "zero_gradients", {"code": "x"}):
        v = validate(card(flags=flags), TASK, weights_sha256=W)
        assert v.ok and v.flags == []
