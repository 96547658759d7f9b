"""Analysis against hand computations on a fixed answer set (accuracy, exact CI, binomial and Fisher p, κ, times)."""

from __future__ import annotations

import math

import pytest

from medrobust.study.analyze import (analyze_answers, cohen_kappa, fleiss_kappa, proportion, render_html,
                                     render_markdown, score)

# 2 raters, 8 items: items 1-4 SAP, 5-8 PGD. Whether each rater picked the altered strip (2AFC):
A_RIGHT = [1, 0, 1, 0, 1, 1, 1, 1]   # A: SAP 2/4, PGD 4/4, total 6/8
B_RIGHT = [1, 0, 0, 0, 1, 1, 1, 0]   # B: SAP 1/4, PGD 3/4, total 4/8
A_SAME = [1, 1, 1, 1, 0, 1, 1, 1]    # A judged item 5 a different class
B_SAME = [1] * 8
A_RT = [2, 4, 6, 8, 10, 12, 14, 16]  # seconds
B_RT = [1] * 8


def _answers() -> list[dict]:
    out = []
    for rater, right, same, rts in (("A", A_RIGHT, A_SAME, A_RT), ("B", B_RIGHT, B_SAME, B_RT)):
        for i in range(8):
            side = "left" if (i + (rater == "B")) % 2 else "right"  # sides vary: scoring must use the key
            choice = side if right[i] else ("right" if side == "left" else "left")
            out.append({"rater": rater, "item": i + 1, "attack": "sap" if i < 4 else "pgd", "adv_side": side,
                        "shown_kind": None, "choice": choice, "same_class": same[i], "confidence": None,
                        "comment": "", "shown_at": 1000.0 + 100 * i, "answered_at": 1000.0 + 100 * i + rts[i]})
    return out


def _binom_tail(k: int, n: int, p: float, *, upper: bool) -> float:
    js = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in js)


def test_detection_by_hand() -> None:
    card = analyze_answers(_answers(), "2afc")
    d = card["detection"]
    assert (d["pooled"]["k"], d["pooled"]["n"]) == (10, 16) and d["pooled"]["value"] == 10 / 16
    # two-sided exact binomial vs 0.5 (symmetric, so twice one tail):
    # 10/16: 2·(C(16,10)+C(16,11)+...+C(16,16))/2^16 = 2·(8008+4368+1820+560+120+16+1)/65536 = 29786/65536
    assert d["pooled"]["p_value"] == pytest.approx(29786 / 65536, abs=1e-12)
    # rater A 6/8: 2·(28+8+1)/256 = 74/256; rater B 4/8: p = 1
    assert d["per_rater"]["A"]["p_value"] == pytest.approx(74 / 256, abs=1e-12)
    assert d["per_rater"]["B"]["p_value"] == pytest.approx(1.0)
    # SAP 3/8: 2·(1+8+28+56)/256 = 186/256; PGD 7/8: 2·(8+1)/256 = 18/256
    assert d["per_attack"]["sap"]["p_value"] == pytest.approx(186 / 256, abs=1e-12)
    assert d["per_attack"]["pgd"]["p_value"] == pytest.approx(18 / 256, abs=1e-12)
    assert d["per_rater_attack"]["A"]["pgd"]["k"] == 4 and d["per_rater_attack"]["B"]["sap"]["k"] == 1


def test_clopper_pearson_by_hand() -> None:
    d = analyze_answers(_answers(), "2afc")["detection"]
    # k = n: the exact interval is [(α/2)^(1/n), 1]; rater A's PGD 4/4: [0.025^(1/4), 1]
    lo, hi = d["per_rater_attack"]["A"]["pgd"]["ci95"]
    assert lo == pytest.approx(0.025 ** 0.25, abs=1e-9) and hi == 1.0
    # otherwise the bounds solve P(X >= k | lo) = 0.025 and P(X <= k | hi) = 0.025 (binomial sums by hand)
    lo, hi = d["pooled"]["ci95"]
    assert _binom_tail(10, 16, lo, upper=True) == pytest.approx(0.025, abs=1e-9)
    assert _binom_tail(10, 16, hi, upper=False) == pytest.approx(0.025, abs=1e-9)
    assert 0.35 < lo < 10 / 16 < hi < 0.86
    # k = 0: [0, 1 − 0.025^(1/n)]
    p0 = proportion(0, 5)
    assert p0["ci95"][0] == 0.0 and p0["ci95"][1] == pytest.approx(1 - 0.025 ** 0.2, abs=1e-9)
    assert proportion(0, 0)["value"] is None


def test_fisher_difference_by_hand() -> None:
    (diff,) = analyze_answers(_answers(), "2afc")["detection"]["attack_differences"]
    assert (diff["a"], diff["b"]) == ("pgd", "sap") and diff["table"] == [[7, 1], [3, 5]]
    # hypergeometric, margins 8/8 and 10 right: P(x PGD right) = C(8,x)·C(8,10−x)/C(16,10), C(16,10) = 8008;
    # x = 2..8 -> 28, 448, 1960, 3136, 1960, 448, 28; observed x = 7 (448); two-sided: tables as or less likely
    # (x = 2, 3, 7, 8) -> (28+448+448+28)/8008 = 952/8008
    assert diff["p_value"] == pytest.approx(952 / 8008, abs=1e-12)
    assert diff["odds_ratio"] == pytest.approx((7 * 5) / (1 * 3))


def test_kappa_by_hand() -> None:
    card = analyze_answers(_answers(), "2afc")
    # detection: agree on items 1,2,4,5,6,7 -> po = 6/8; pA(right) = 6/8, pB(right) = 4/8
    # pe = 6/8·4/8 + 2/8·4/8 = 1/2; κ = (3/4 − 1/2)/(1 − 1/2) = 1/2
    agr = card["detection"]["agreement"]
    assert agr == {"measure": "cohen", "raters": 2, "items": 8, "kappa": pytest.approx(0.5)}
    # same class: po = 7/8 but B always says "same": pe = 7/8·1 + 1/8·0 = 7/8 -> κ = 0
    assert card["same_class"]["agreement"]["kappa"] == pytest.approx(0.0, abs=1e-12)
    assert card["same_class"]["pooled"]["k"] == 15 and card["same_class"]["pooled"]["p_value"] is None
    assert cohen_kappa([1, 1], [1, 1]) is None  # chance agreement 1: undefined, not 1 or 0


def test_fleiss_by_hand() -> None:
    # 4 items × 3 raters; P_i = (Σ n_ij² − 3)/6 = 1, 1/3, 1, 1/3 -> P̄ = 2/3; p(1) = p(0) = 6/12 -> P̄e = 1/2
    # κ = (2/3 − 1/2)/(1/2) = 1/3
    assert fleiss_kappa([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]]) == pytest.approx(1 / 3)
    answers = _answers() + [{**a, "rater": "C"} for a in _answers() if a["rater"] == "A"]
    agr = analyze_answers(answers, "2afc")["detection"]["agreement"]
    # C copies A. Items (A,B,C) right: 1:(1,1,1) 2:(0,0,0) 3:(1,0,1) 4:(0,0,0) 5-7:(1,1,1) 8:(1,0,1)
    # P_i: 1,1,1/3,1,1,1,1,1/3 -> P̄ = (6 + 2/3)/8 = 5/6; p(1) = 16/24 = 2/3 -> P̄e = 4/9 + 1/9 = 5/9
    # κ = (5/6 − 5/9)/(4/9) = (5/18)/(8/18) = 5/8
    assert agr["measure"] == "fleiss" and agr["raters"] == 3 and agr["kappa"] == pytest.approx(5 / 8)


def test_response_times_by_hand() -> None:
    rt = analyze_answers(_answers(), "2afc")["response_times"]
    # pooled: eight 1 s and 2, 4, ..., 16 s; linear percentile at 7.5 of 15 -> (1 + 2)/2
    assert rt["pooled"]["median_s"] == pytest.approx(1.5) and rt["pooled"]["n"] == 16
    # rater A: median (8 + 10)/2 = 9; Q1 at index 1.75 -> 4 + 0.75·2 = 5.5; mean 72/8 = 9
    assert rt["per_rater"]["A"]["median_s"] == pytest.approx(9.0)
    assert rt["per_rater"]["A"]["q1_s"] == pytest.approx(5.5) and rt["per_rater"]["A"]["mean_s"] == pytest.approx(9)
    # SAP: A 2,4,6,8 and B 1,1,1,1 -> median (1 + 2)/2 = 1.5
    assert rt["per_attack"]["sap"]["median_s"] == pytest.approx(1.5)


def test_single_and_sameclass_designs() -> None:
    assert score({"choice": "altered", "shown_kind": "adversarial"}, "single") is True
    assert score({"choice": "real", "shown_kind": "clean"}, "single") is True
    assert score({"choice": "real", "shown_kind": "adversarial"}, "single") is False
    assert score({"choice": "altered", "shown_kind": "clean"}, "single") is False
    assert score({"choice": "left", "adv_side": "left"}, "2afc") is True
    assert score({"choice": "left", "adv_side": "right"}, "2afc") is False
    same = analyze_answers([{**a, "choice": None} for a in _answers()], "sameclass")
    assert "detection" not in same and same["same_class"]["per_attack"]["pgd"]["k"] == 7
    single = analyze_answers([{**a, "same_class": None, "adv_side": None, "shown_kind": "clean",
                               "choice": "real" if i % 3 else "altered"} for i, a in enumerate(_answers())], "single")
    # "real" on a clean strip is right: indices 0, 3, 6, 9, 12, 15 answered "altered" -> 10/16 right
    assert "same_class" not in single and single["detection"]["pooled"]["k"] == 10


def test_reports_show_the_numbers_and_escape_comments() -> None:
    answers = _answers()
    answers[0]["comment"] = "<script>alert(1)</script>"
    card = analyze_answers(answers, "2afc")
    card["comments"] = [{"rater": "A", "item": 1, "comment": answers[0]["comment"]}]
    md, page = render_markdown(card), render_html(card)
    assert "| pooled | 10/16 | 62.5 % |" in md and "| attack pgd | 7/8 | 87.5 % |" in md
    assert "| 0.454 |" in md  # p = 29786/65536 = 0.45450 printed with 3 significant digits
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>cohen</td>" in page and "<td>0.500</td>" in page
    assert "- A, item 1: &lt;script&gt;alert(1)&lt;/script&gt;" in md  # escaped in Markdown too (raw HTML)
