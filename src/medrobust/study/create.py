"""``medrobust study create``: one SQLite study database from an attack run or a Han 2020 band-step folder.

Sources (clean/adversarial pairs, ``(n, leads, samples)``):

- a ``medrobust attack`` folder: ``adversarial.npz`` (``x``, ``x_adv``, ``y``, ``clean_pred``, ``adv_pred``,
  ``ids``, ``fs``, ``units``, ``classes``, ``attack``) and ``attack.json`` (the lead names);
- a reproduction band-step folder (Han et al., Nature Medicine 26:360, 2020): ``pairs_sap.npz`` and
  ``pairs_pgd.npz`` with the same keys, one attack each;
- a ``medrobust evaluate --out`` folder: its ``examples.npz`` (every attack alone at every ε on a few records);
  one ε is chosen (``eps``), each attack becomes one source, and min-max scaled beats carry their recorded µV
  scale (``uv_scale``, ``uv_offset``), so that they are drawn in mV.

Per attack, ``per_attack`` pairs are chosen, stratified by true class with a seeded generator
(:func:`medrobust.evaluation.inputs.select_indices`), among the successful adversarial examples (clean
prediction right, adversarial prediction wrong) unless ``include_failed``. Optional noise controls add pairs whose
altered strip is the clean record plus Gaussian noise of the same L2 energy as that record's adversarial
perturbation (attack name ``noise``). Every rater gets every item, in a seeded random order, with the altered strip
on the left for half of the items and on the right for the other half (single-strip design: the altered strip
shown for half of the items), shuffled. Invitation tokens, the admin token and the strips' public ids come from
:mod:`secrets`; the database keeps only the tokens' SHA-256 digests.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.atomic import atomic_write_bytes
from medrobust.checks import check_bool, check_choice, check_float, check_int
from medrobust.errors import ConfigError, DataError
from medrobust.study.render import render_pair
from medrobust.study.schema import DESIGNS, connect, create_schema, token_hash, transaction

NOISE = "noise"
KEYS = ("x", "x_adv", "y")


@dataclass(frozen=True)
class StudySpec:
    """Settings of a study (``medrobust study create`` options)."""

    raters: int = 2
    per_attack: int = 10
    design: str = "2afc"
    seed: int = 0
    lead: int = 0
    include_failed: bool = False
    noise_controls: int = 0
    rater_names: tuple[str, ...] = ()
    lead_name: str | None = None
    allow_change: bool = False
    eps: float | None = None
    base_url: str = "http://127.0.0.1:8000"

    def check(self) -> None:
        check_int(self.raters, "--raters", minimum=1, maximum=1000)
        check_int(self.per_attack, "--per-attack", minimum=1, maximum=100000)
        check_choice(self.design, "--design", DESIGNS)
        check_int(self.seed, "--seed")
        check_int(self.lead, "--lead")
        check_int(self.noise_controls, "--noise-controls")
        check_bool(self.allow_change, "--allow-change")
        check_bool(self.include_failed, "--include-failed")
        if self.eps is not None:
            check_float(self.eps, "--eps", minimum=0.0, strict=True)
        if self.rater_names and len(self.rater_names) != self.raters:
            raise ConfigError(f"--rater-names gives {len(self.rater_names)} names for --raters {self.raters}; "
                              "give one name per rater.")
        if len(set(self.rater_names)) != len(self.rater_names) or any(not n.strip() for n in self.rater_names):
            raise ConfigError("--rater-names: names must be distinct and non-empty.")


@dataclass
class Source:
    """The pairs of one attack."""

    attack: str
    x: np.ndarray
    x_adv: np.ndarray
    y: np.ndarray
    clean_pred: np.ndarray | None
    adv_pred: np.ndarray | None
    ids: list[str]
    fs: float
    units: str
    classes: list[str]
    leads: list[str] = field(default_factory=list)
    uv_scale: np.ndarray | None = None
    uv_offset: np.ndarray | None = None

    def scale(self, i: int) -> dict[str, float | None]:
        """Record ``i``'s µV map (min-max scaled beats), for :func:`medrobust.study.render.render_pair`."""
        return {"uv_scale": None if self.uv_scale is None else float(self.uv_scale[i]),
                "uv_offset": None if self.uv_offset is None else float(self.uv_offset[i])}


def _scalar(z: Any, key: str, default: Any) -> Any:
    return z[key].item() if key in z.files else default


def read_pairs(path: Path, *, attack: str | None = None, leads: list[str] | None = None) -> Source:
    """One npz of pairs (module docstring) as a :class:`Source`, with clear errors."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks {missing}; expected an attack export (adversarial.npz) or "
                                "a band step's pairs_*.npz.")
            x, xa, y = (np.asarray(z[k]) for k in KEYS)
            n = len(y)
            src = Source(
                attack=str(_scalar(z, "attack", attack or path.stem)), x=x.astype(np.float64),
                x_adv=xa.astype(np.float64), y=y.astype(np.int64),
                clean_pred=np.asarray(z["clean_pred"]).astype(np.int64) if "clean_pred" in z.files else None,
                adv_pred=np.asarray(z["adv_pred"]).astype(np.int64) if "adv_pred" in z.files else None,
                ids=[str(v) for v in z["ids"]] if "ids" in z.files else [f"#{i}" for i in range(n)],
                fs=float(_scalar(z, "fs", float("nan"))), units=str(_scalar(z, "units", "")),
                classes=[str(c) for c in z["classes"]] if "classes" in z.files else [],
                leads=list(leads or []),
                uv_scale=np.asarray(z["uv_scale"], dtype=np.float64) if "uv_scale" in z.files else None,
                uv_offset=np.asarray(z["uv_offset"], dtype=np.float64) if "uv_offset" in z.files else None)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; is it an npz written by medrobust?") from None
    _check_source(src, path)
    return src


def _check_source(src: Source, path: Path) -> None:
    if src.x.ndim != 3 or src.x.shape != src.x_adv.shape or len(src.y) != len(src.x):
        raise DataError(f"{path}: x and x_adv must both be (n, leads, samples) with one label each, got "
                        f"{src.x.shape}, {src.x_adv.shape} and {src.y.shape}.")
    if not (np.isfinite(src.fs) and src.fs > 0):
        raise DataError(f"{path}: no sampling rate (fs) recorded; the study draws strips in seconds and needs it.")
    if not src.classes:
        src.classes = [str(c) for c in range(int(src.y.max()) + 1)]


def evaluation_sources(path: Path, eps: float | None) -> list[Source]:
    """One :class:`Source` per attack of an evaluation run's ``examples.npz``, at radius ``eps``."""
    from medrobust.evaluation.card import read_npz

    z = read_npz(path)
    need = [k for k in ("x", "x_adv", "y", "labels", "eps", "adv_pred") if k not in z]
    if need:
        raise DataError(f"{path} lacks {need}: it is not an examples file written by `medrobust evaluate`.")
    radii = [float(e) for e in z["eps"]]
    if eps is None and len(radii) != 1:
        raise ConfigError(f"--eps: {path} holds examples at ε = {radii}; choose one with --eps.")
    matches = [i for i, r in enumerate(radii) if eps is None or abs(r - eps) <= 1e-9 * max(1.0, abs(r))]
    if not matches:
        raise ConfigError(f"--eps {eps}: {path} holds examples at ε = {radii} only.")
    e = matches[0]
    out = []
    for m, label in enumerate(z["labels"]):
        src = Source(attack=str(label), x=z["x"].astype(np.float64), x_adv=z["x_adv"][m, e].astype(np.float64),
                     y=z["y"].astype(np.int64), clean_pred=z["clean_pred"].astype(np.int64) if "clean_pred" in z
                     else None, adv_pred=z["adv_pred"][m, e].astype(np.int64), ids=[str(v) for v in z["ids"]],
                     fs=float(z["fs"]) if "fs" in z else float("nan"), units=str(z.get("units", "")),
                     classes=[str(c) for c in z.get("classes", [])], leads=[str(v) for v in z.get("leads", [])],
                     uv_scale=z["uv_scale"].astype(np.float64) if "uv_scale" in z else None,
                     uv_offset=z["uv_offset"].astype(np.float64) if "uv_offset" in z else None)
        _check_source(src, path)
        out.append(src)
    return out


def load_sources(folder: str | Path, *, eps: float | None = None) -> list[Source]:
    """The pairs in ``folder``: an attack export, a band step's ``pairs_*.npz`` or an evaluation run's examples."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"SRC {root}: not a folder; pass a `medrobust attack --out` or `medrobust evaluate --out` "
                          "folder, or a reproduction's band-step folder holding pairs_sap.npz and pairs_pgd.npz.")
    if (root / "examples.npz").is_file() and not (root / "adversarial.npz").is_file():
        return evaluation_sources(root / "examples.npz", eps)
    adv = root / "adversarial.npz"
    if adv.is_file():
        leads: list[str] = []
        info = root / "attack.json"
        if info.is_file():
            try:
                leads = [str(v) for v in json.loads(info.read_text(encoding="utf-8")).get("data", {}).get("leads", [])]
            except (OSError, ValueError, AttributeError):
                raise DataError(f"{info} is not valid JSON; rerun `medrobust attack` or remove the file.") from None
        return [read_pairs(adv, leads=leads)]
    pairs = sorted(root.glob("pairs_*.npz"))
    if not pairs:
        raise ConfigError(f"SRC {root} holds neither adversarial.npz, examples.npz nor pairs_*.npz; pass a "
                          "`medrobust attack --out` or `medrobust evaluate --out` folder or a reproduction's "
                          "band-step folder.")
    out = [read_pairs(p, attack=p.stem.removeprefix("pairs_")) for p in pairs]
    names = [s.attack for s in out]
    if len(set(names)) != len(names):
        raise DataError(f"{root}: two files hold the same attack ({names}).")
    return out


def choose(src: Source, *, k: int, seed: int, include_failed: bool) -> np.ndarray:
    """Indices of ``k`` pairs of ``src``: stratified by true class, seeded, successful attacks only by default."""
    from medrobust.evaluation.inputs import select_indices

    ok = np.ones(len(src.y), dtype=bool)
    if not include_failed and src.adv_pred is not None:
        ok &= src.adv_pred != src.y
        if src.clean_pred is not None:
            ok &= src.clean_pred == src.y
    ok &= np.abs(src.x_adv - src.x).reshape(len(src.y), -1).max(1) > 0
    cand = np.flatnonzero(ok)
    if not len(cand):
        raise DataError(f"attack {src.attack}: no pair to show (no successful adversarial example with a non-zero "
                        "perturbation); pass --include-failed to show unsuccessful ones.")
    return cand[select_indices(len(cand), k, seed=seed, labels=src.y[cand])]


def noise_controls(src: Source, *, k: int, seed: int) -> Source:
    """``k`` records of ``src`` (stratified, seeded) paired with clean + Gaussian noise of the same L2 energy."""
    idx = choose(src, k=k, seed=seed + 1, include_failed=True)
    rng = np.random.default_rng(seed + 2)
    x = src.x[idx]
    energy = np.linalg.norm((src.x_adv[idx] - x).reshape(len(idx), -1), axis=1)
    noise = rng.standard_normal(x.shape)
    noise *= (energy / np.linalg.norm(noise.reshape(len(idx), -1), axis=1))[:, None, None]
    return Source(attack=NOISE, x=x, x_adv=x + noise, y=src.y[idx],
                  clean_pred=None if src.clean_pred is None else src.clean_pred[idx], adv_pred=None,
                  ids=[src.ids[i] for i in idx], fs=src.fs, units=src.units, classes=src.classes, leads=src.leads,
                  uv_scale=None if src.uv_scale is None else src.uv_scale[idx],
                  uv_offset=None if src.uv_offset is None else src.uv_offset[idx])


def _insert_items(con: Any, sources: list[tuple[Source, np.ndarray]], lead: int, lead_name: str | None
                  ) -> list[int]:
    item_ids = []
    for src, idx in sources:
        if lead >= src.x.shape[1]:
            raise ConfigError(f"--lead {lead}: attack {src.attack}'s records have {src.x.shape[1]} lead(s) "
                              f"(0..{src.x.shape[1] - 1}).")
        name = lead_name or (src.leads[lead] if lead < len(src.leads) else f"{lead + 1} (name not recorded)")
        for i in idx:
            s = render_pair(src.x[i, lead], src.x_adv[i, lead], fs=src.fs, units=src.units, lead=name,
                            **src.scale(int(i)))
            y = int(src.y[i])
            cur = con.execute(
                "INSERT INTO items (attack, record_id, label, label_name, clean_pred, adv_pred, lead, fs, seconds, "
                "axis_note, source_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (src.attack, src.ids[i], y, src.classes[y] if y < len(src.classes) else str(y),
                 None if src.clean_pred is None else int(src.clean_pred[i]),
                 None if src.adv_pred is None else int(src.adv_pred[i]), name, src.fs, s.seconds, s.axis_note,
                 int(i)))
            item_ids.append(int(cur.lastrowid))
            con.executemany("INSERT INTO strips (item_id, kind, png) VALUES (?, ?, ?)",
                            [(cur.lastrowid, "clean", s.clean), (cur.lastrowid, "adversarial", s.adversarial)])
    return item_ids


def _balanced(rng: np.random.Generator, n: int, a: str, b: str) -> list[str]:
    """``n`` labels, half ``a`` and half ``b`` (the odd one drawn at random), in a random order."""
    labels = [a] * (n // 2) + [b] * (n // 2) + ([a if rng.random() < 0.5 else b] if n % 2 else [])
    return [labels[i] for i in rng.permutation(n)]


def _assign(con: Any, rater_id: int, item_ids: list[int], design: str, rng: np.random.Generator) -> None:
    order = [item_ids[i] for i in rng.permutation(len(item_ids))]
    strips = {(r["item_id"], r["kind"]): r["id"] for r in con.execute("SELECT id, item_id, kind FROM strips")}
    if design == "single":
        kinds = _balanced(rng, len(order), "clean", "adversarial")
    else:
        sides = _balanced(rng, len(order), "left", "right")
    for pos, item in enumerate(order):
        if design == "single":
            cur = con.execute("INSERT INTO assignments (rater_id, position, item_id, shown_kind) VALUES (?, ?, ?, ?)",
                              (rater_id, pos, item, kinds[pos]))
            slots = [("single", strips[item, kinds[pos]])]
        else:
            cur = con.execute("INSERT INTO assignments (rater_id, position, item_id, adv_side) VALUES (?, ?, ?, ?)",
                              (rater_id, pos, item, sides[pos]))
            other = "right" if sides[pos] == "left" else "left"
            slots = [(sides[pos], strips[item, "adversarial"]), (other, strips[item, "clean"])]
        con.executemany("INSERT INTO slots (public_id, assignment_id, side, strip_id) VALUES (?, ?, ?, ?)",
                        [(secrets.token_urlsafe(16), cur.lastrowid, side, sid) for side, sid in sorted(slots)])


def create_study(src: str | Path, out: str | Path, spec: StudySpec) -> dict[str, Any]:
    """Build the study database ``out`` from the pairs in ``src``; returns the invitation links and admin token.

    The returned secrets are not stored anywhere but as digests: hand the links to the raters.
    """
    spec.check()
    sources = load_sources(src, eps=spec.eps)
    picked = [(s, choose(s, k=spec.per_attack, seed=spec.seed, include_failed=spec.include_failed))
              for s in sources]
    if spec.noise_controls:
        base = next((s for s in sources if s.attack == "pgd"), sources[-1])
        ctl = noise_controls(base, k=spec.noise_controls, seed=spec.seed)
        picked.append((ctl, np.arange(len(ctl.y))))
    admin = secrets.token_urlsafe(32)
    meta = {"design": spec.design, "seed": spec.seed, "allow_change": spec.allow_change,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(Path(src).resolve()), "spec": {**asdict(spec), "rater_names": list(spec.rater_names)},
            "attacks": {s.attack: {"chosen": len(i), "available": len(s.y), "units": s.units, "fs": s.fs}
                        for s, i in picked},
            "admin_hash": token_hash(admin)}
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    con = connect(out_p, create=True)
    try:
        create_schema(con, meta)
        rng = np.random.default_rng(spec.seed)
        with transaction(con):
            item_ids = _insert_items(con, picked, spec.lead, spec.lead_name)
            names = list(spec.rater_names) or [f"rater{i + 1:02d}" for i in range(spec.raters)]
            tokens = {}
            for name in names:
                tok = secrets.token_urlsafe(32)
                cur = con.execute("INSERT INTO raters (name, token_hash) VALUES (?, ?)", (name, token_hash(tok)))
                _assign(con, int(cur.lastrowid), item_ids, spec.design, rng)
                tokens[name] = tok
    except BaseException:
        con.close()
        out_p.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(out_p) + suffix).unlink(missing_ok=True)
        raise
    con.close()
    base = spec.base_url.rstrip("/")
    return {"admin_token": admin, "items": len(item_ids),
            "invitations": {n: f"{base}/r/{t}" for n, t in tokens.items()}}


def write_invitations(path: Path, result: dict[str, Any]) -> None:
    """The invitation links and the admin token, readable by the owner only (mode 0600)."""
    lines = [f"admin token: {result['admin_token']}"] + [f"{n}: {u}" for n, u in result["invitations"].items()]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"), mode=0o600)
