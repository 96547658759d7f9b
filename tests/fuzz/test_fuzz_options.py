"""Property: any ``--option`` text, any YAML config text and any option value give a validated result or one
ConfigError line naming the key (or the config file); never another exception, never work started."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from medrobust.cli._util import parse_options, read_yaml
from medrobust.cli.main import build_parser
from medrobust.cli.train import CONFIG_SCHEMA, resolve_config
from medrobust.data import available_datasets, check_dataset_options, dataset_options
from medrobust.errors import ConfigError

from ._fuzz import accepted, assert_names, fuzz_settings

KEYS = sorted({k for n in available_datasets() for k in dataset_options(n)}) + ["bogus_key", ""]
scalars = (st.none() | st.booleans() | st.integers(-1000, 10**6) | st.floats(allow_nan=True)
           | st.text(alphabet=string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(string.ascii_lowercase, max_size=6), inner, max_size=3), max_leaves=6)


@fuzz_settings(40)
@given(dataset=st.sampled_from(available_datasets()),
       pairs=st.lists(st.tuples(st.sampled_from(KEYS), st.text(alphabet=string.printable, max_size=20)), max_size=4))
def test_option_text_is_parsed_and_checked_or_refused_naming_the_key(dataset: str, pairs: list) -> None:
    argv = [f"{k}={v}" for k, v in pairs]
    try:
        options = check_dataset_options(dataset, parse_options(argv))
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_names(exc, "--option", *{k for k, _ in pairs if k})
        assert "\n" not in str(exc)
    else:
        accepted()
        assert set(options) <= set(dataset_options(dataset))


@fuzz_settings(40)
@given(dataset=st.sampled_from(available_datasets()),
       options=st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
def test_python_keyword_values_checked_naming_the_key(dataset: str, options: dict) -> None:
    try:
        out = check_dataset_options(dataset, options)
    except Exception as exc:  # noqa: BLE001
        assert_names(exc, *options)
    else:
        accepted()
        assert set(out) == set(options)


sections = st.dictionaries(st.sampled_from(["name", "root", "options", "kwargs", "epochs", "lr", "split"]),
                           values, max_size=3)
configs = st.dictionaries(st.sampled_from(sorted(CONFIG_SCHEMA) + ["bogus"]), values | sections, max_size=4)


@fuzz_settings(40)
@given(config=configs | values)
def test_any_yaml_train_config_is_resolved_or_refused_in_one_line(config: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        args = build_parser().parse_args(["train", "--config", str(path), "--out", str(Path(tmp) / "out")])
        try:
            cfg = resolve_config(args)
        except Exception as exc:  # noqa: BLE001
            keys = list(config) if isinstance(config, dict) else []
            assert_names(exc, "config.yaml", *map(str, keys))
            assert "\n" not in str(exc)
        else:
            accepted()
            assert isinstance(cfg["train"], dict) and isinstance(cfg["dataset"]["options"], dict)
        assert not (Path(tmp) / "out").exists()  # resolving a config never creates the output folder


@fuzz_settings(30)
@given(text=st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_any_config_text_reads_as_a_mapping_or_one_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            data = read_yaml(path)
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, ConfigError)
            assert_names(exc, "config.yaml")
        else:
            accepted()
            assert isinstance(data, dict)
