"""A blinded expert study of clean/adversarial ECG pairs (``medrobust study create | serve | analyze``).

:mod:`~medrobust.study.create` builds one SQLite database (:mod:`~medrobust.study.schema`) from an attack,
evaluation or band-step folder, with strips drawn by :mod:`~medrobust.study.render`; :mod:`~medrobust.study.app`
serves it to the raters (FastAPI, optional extra ``study``) through :mod:`~medrobust.study.store`;
:mod:`~medrobust.study.analyze` computes the exact statistics. Han et al. (Nature Medicine 26:360, 2020) ran this
study by hand with two clinicians. Nothing is imported here, so that ``create`` and ``analyze`` work without FastAPI.
"""
