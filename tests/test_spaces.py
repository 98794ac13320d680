from __future__ import annotations

import ast
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from hwnas_deploy.errors import ConfigError, UnknownNameError
from hwnas_deploy.spaces import get_space, load_config, load_configs, space_names

from .conftest import DYNAST_DIR

ALL_SPACES = ["ofa-mbv3-w1.0", "ofa-mbv3-w1.2", "mcu-mbnet"]  # the MobileNet-style spaces (nb201: test_nb201.py)


def count_macs_by_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """Independent count on the built torch module: every Conv2d and Linear, at batch 1."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def dynast_rows():
    rows = []
    for path in sorted(DYNAST_DIR.glob("*.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def test_dynast_macs_and_params_reproduced_exactly_for_every_row():
    rows = dynast_rows()
    assert len(rows) == 2373
    sp = get_space("ofa-mbv3-w1.0")
    mismatches = []
    for row in rows:
        cfg = ast.literal_eval(row["Sub-network"])
        got = (sp.macs(cfg), sp.params_count(cfg))
        want = (int(row["MACs"]), int(row["Model Parameters"]))
        if got != want:
            mismatches.append((cfg, got, want))
    assert mismatches == []


def test_dynast_rows_match_the_built_torch_module():
    """The analytic counts are the torch module's: check on rows of the real logs."""
    sp = get_space("ofa-mbv3-w1.0")
    for row in dynast_rows()[::400]:
        cfg = ast.literal_eval(row["Sub-network"])
        model = sp.build(cfg)
        assert sum(p.numel() for p in model.parameters()) == int(row["Model Parameters"])
        assert count_macs_by_hooks(model, sp.example_input(cfg)) == int(row["MACs"])


@pytest.mark.parametrize("name", ALL_SPACES)
def test_analytic_counts_equal_torch_module(name):
    sp = get_space(name)
    for cfg in sp.sample_unique(4, rng=7):
        model = sp.build(cfg)
        x = sp.example_input(cfg)
        assert count_macs_by_hooks(model, x) == sp.macs(cfg)
        assert sum(p.numel() for p in model.parameters()) == sp.params_count(cfg)
        assert model(x).shape == (1, 1000)


def test_ofa_w12_widths_and_cost_ordering():
    # Widths are OFA's make_divisible(base * 1.2, 8) of (16, 16, 24, 40, 80, 112, 160).
    sp = get_space("ofa-mbv3-w1.2")
    largest = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224}
    smallest = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128}
    assert sp.params_count(largest) > sp.params_count(smallest)
    assert sp.macs(largest) > 4 * sp.macs(smallest)
    assert sp.widths[:7] == [24, 24, 32, 48, 96, 136, 192]


def test_mcu_space_smallest_fits_board_and_largest_does_not():
    sp = get_space("mcu-mbnet")
    smallest = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 0.35, "r": 64}
    largest = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "w": 1.0, "r": 224}
    sram, flash = 320 * 1024, 1024 * 1024
    # int8: one byte per activation element and per weight
    assert sp.peak_activation_bytes(smallest) < sram
    assert sp.params_count(smallest) < flash
    assert sp.peak_activation_bytes(largest) > sram
    assert sp.params_count(largest) > flash


def test_peak_activation_counts_the_residual_input():
    from hwnas_deploy.spaces.blocks import MBConvBlock

    plain = MBConvBlock(8, 16, 48, 16, 3, 1, "relu6", 0, False, 3)
    res = MBConvBlock(8, 16, 48, 16, 3, 1, "relu6", 0, True, 3)
    assert max(i + o for i, o in res.activation_sizes()) == max(i + o for i, o in plain.activation_sizes()) + 64 * 16


@pytest.mark.parametrize("name", ALL_SPACES)
def test_canonical_ignores_unused_genes_and_hash_recognises_duplicates(name):
    sp = get_space(name)
    cfg = sp.sample(3)
    cfg["d"][0] = 2
    other = json.loads(json.dumps(cfg))
    other["ks"][3] = 7 if cfg["ks"][3] != 7 else 5  # block 3 of stage 0 is unused at depth 2
    other["e"][2] = 6 if cfg["e"][2] != 6 else 4
    assert sp.config_hash(cfg) == sp.config_hash(other)
    assert sp.canonical(cfg) == sp.canonical(other)
    used = json.loads(json.dumps(cfg))
    used["ks"][0] = 7 if cfg["ks"][0] != 7 else 5
    assert sp.config_hash(used) != sp.config_hash(cfg)


@pytest.mark.parametrize("name", ALL_SPACES)
def test_genes_round_trip_and_bounds(name):
    sp = get_space(name)
    lo, hi = sp.gene_bounds()
    for cfg in sp.sample_unique(5, rng=1):
        g = sp.genes(cfg)
        assert g.shape == (sp.n_genes,) and (g >= lo).all() and (g <= hi).all()
        assert sp.from_genes(g) == cfg
    with pytest.raises(ConfigError, match="out of range"):
        sp.from_genes(hi + 1)


def test_encode_is_one_hot_with_unused_genes_zero():
    sp = get_space("ofa-mbv3-w1.0")
    cfg = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224}
    f = sp.encode(cfg)
    assert f.shape == (20 * 3 + 20 * 3 + 5 * 3 + 25,)
    # 10 used blocks x (ks, e) + 5 depths + 1 resolution are hot
    assert f.sum() == 10 * 2 + 5 + 1
    assert set(np.unique(f)) <= {0.0, 1.0}


def test_sampling_is_deterministic_and_unique():
    sp = get_space("mcu-mbnet")
    a, b = sp.sample_unique(30, rng=5), sp.sample_unique(30, rng=5)
    assert a == b
    assert len({sp.config_hash(c) for c in a}) == 30


@pytest.mark.parametrize(
    "cfg_patch, message",
    [
        ({"ks": [3] * 19}, r"'ks' must be a list of 20"),
        ({"e": [3] * 19 + [5]}, r"e\[19\]=5 is not allowed; choices: \[3, 4, 6\]"),
        ({"d": [2, 3, 4, 5, 2]}, r"d\[3\]=5 is not allowed"),
        ({"r": 225}, r"r=225 is not allowed"),
        ({"ks": [True] * 20}, r"ks\[0\]=True is not allowed"),
        ({"depth": 3}, r"unknown config key 'depth'"),
        ({"wid": 1.0}, r"unknown config key 'wid'"),
    ],
)
def test_validation_names_the_bad_key_and_value(cfg_patch, message):
    sp = get_space("ofa-mbv3-w1.0")
    cfg = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [224], "wid": None}
    cfg.update(cfg_patch)
    with pytest.raises(ConfigError, match=message):
        sp.validate(cfg)


def test_missing_key_and_non_object():
    sp = get_space("mcu-mbnet")
    with pytest.raises(ConfigError, match="lacks key 'w'"):
        sp.validate({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 96})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        sp.validate([1, 2])


def test_unknown_space_lists_known_ones():
    with pytest.raises(UnknownNameError, match="unknown search space 'resnet'.*mcu-mbnet"):
        get_space("resnet")
    assert space_names() == sorted([*ALL_SPACES, "nb201", "blox", "blox-mini"])


def test_load_config_from_json_text_and_file(tmp_path):
    cfg = get_space("mcu-mbnet").sample(0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    assert load_config("@" + str(path)) == cfg
    assert load_config(json.dumps(cfg)) == cfg
    with pytest.raises(ConfigError, match="malformed JSON at line 1 column"):
        load_config('{"ks": [3,}')
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("@" + str(tmp_path / "missing.json"))


def test_load_configs_names_the_file_and_line(tmp_path):
    sp = get_space("mcu-mbnet")
    good = [sp.sample(1), sp.sample(2)]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(good[1]) + "\n")
    assert load_configs(path, sp) == [sp.validate(c) for c in good] and load_configs(path) == good
    path.write_text(json.dumps(good[0]) + "\n" + json.dumps({**good[1], "r": 7}) + "\n")
    assert len(load_configs(path)) == 2  # without a space: parsed, not checked
    with pytest.raises(ConfigError, match=r"c.jsonl line 2: mcu-mbnet: r=7 is not allowed; choices"):
        load_configs(path, sp)
    path.write_text("{}\n3\n")
    with pytest.raises(ConfigError, match="c.jsonl line 2: config: a config must be a JSON object"):
        load_configs(path)
    path.write_text(json.dumps(good[0]) + "\n[1]\n")  # a list is a BLOX arch vector: only blox takes one
    with pytest.raises(ConfigError, match="c.jsonl line 2: mcu-mbnet: a config must be a JSON object, got list"):
        load_configs(path, sp)
    with pytest.raises(ConfigError, match="cannot read configs file .*missing.jsonl"):
        load_configs(tmp_path / "missing.jsonl")


def test_what_hwnas_sample_prints_is_a_configs_file(tmp_path, capsys):
    """`hwnas sample ... > c.jsonl` then `--configs c.jsonl` (BENCHMARKS.md's commands do this)."""
    from hwnas_deploy.cli import cli

    cli.main(["sample", "--space", "mcu-mbnet", "-n", "3", "--seed", "4"], standalone_mode=False)
    (tmp_path / "c.jsonl").write_text(capsys.readouterr().out)
    sp = get_space("mcu-mbnet")
    assert load_configs(tmp_path / "c.jsonl", sp) == sp.sample_unique(3, 4)


def test_random_weights_give_unit_scale_outputs():
    """BatchNorm calibration keeps random sub-networks' outputs far from zero (export checks
    with an absolute tolerance would otherwise pass vacuously)."""
    for name in ALL_SPACES:
        sp = get_space(name)
        cfg = sp.sample(0)
        y = sp.build(cfg)(sp.example_input(cfg)).detach()
        assert 0.02 < float(y.std()) < 10


def test_sample_unique_with_a_filter_and_its_bound():
    sp = get_space("mcu-mbnet")
    small = sp.sample_unique(5, rng=2, accept=lambda c: c["w"] == 0.35)
    assert len(small) == 5 and all(c["w"] == 0.35 for c in small)
    with pytest.raises(ConfigError, match="only 0 of 2 sampled sub-networks"):
        sp.sample_unique(2, rng=2, accept=lambda c: False, max_draws=50)


def test_asking_for_more_networks_than_a_space_holds_fails_at_once():
    """nb201's 15,625 cells build 9,445 distinct networks: all of them are drawn without
    replacement, and one more is refused in seconds (by rejection sampling it took minutes)."""
    import time

    sp = get_space("nb201")
    everything = sp.sample_unique(9445, 0)
    assert len({sp.config_hash(c) for c in everything}) == 9445
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"9,446 sub-networks asked, but the space has only 9,445 distinct"):
        sp.sample_unique(9446, 0)
    assert time.perf_counter() - t0 < 30
    with pytest.raises(ConfigError, match=r"100,000 sub-networks asked, but the space has only 15,625 configs"):
        sp.sample_unique(100_000, 0)


def test_a_space_of_your_own_from_a_file_is_searched_and_its_pick_profiled(tmp_path):
    """examples/tiny_space.py: `--space FILE.py:CLASS` without editing the package; the run
    folder remembers where the space came from, so `hwnas deploy --run` in another process
    finds it."""
    from .conftest import REPO, run_cli

    spec = f"{REPO}/examples/tiny_space.py:TinyCNN"
    sp = get_space(spec)
    assert sp.name == "tiny-cnn" and get_space("tiny-cnn") is sp
    for cfg in sp.sample_unique(5, 0):
        model = sp.build(cfg)
        assert sp.macs(cfg) == count_macs_by_hooks(model, sp.example_input(cfg))
    run_cli("search", "--space", spec, "--objective", "macs", "--objective", "max:params", "--constraint",
            "sram<=16384", "--pop", "8", "--generations", "3", "--out", "run", "--quiet", cwd=tmp_path, check=True)
    front = json.loads((tmp_path / "run" / "front.json").read_text())
    assert front["space"] == "tiny-cnn" and front["space_source"] == spec
    assert front["front"] and all(r["sram"] <= 16384 for r in front["front"])
    out = run_cli("deploy", "--run", "run", "--device", "local-cpu", "--runtime", "onnxruntime", "--db", "s.sqlite",
                  "--quiet", cwd=tmp_path, check=True).stdout
    assert "median_ms" in out and "error" in out.splitlines()[0] and len(out.splitlines()) == 3
    (tmp_path / "bad.py").write_text("class NotASpace:\n    pass\n")
    with pytest.raises(ConfigError, match=r"is not a SearchSpace subclass"):
        get_space(f"{tmp_path}/bad.py:NotASpace")
    with pytest.raises(ConfigError, match=r"has no class 'Nope'"):
        get_space(f"{tmp_path}/bad.py:Nope")


@pytest.mark.parametrize("name", ["mcu-mbnet", "ofa-mbv3-w1.2"])
def test_covering_configs_hold_every_block_any_subnetwork_at_those_genes_has(name):
    """`hwnas lut build --every-block`: 9 configs whose blocks are each distinct block of the
    space at the fixed resolution (and width) once; 400 random sub-networks at those genes have
    no block outside them, and every block of the cover occurs in one of them."""
    sp = get_space(name)
    scalars = [p for p in sp.params if not p.is_vector]
    rng = np.random.default_rng(0)
    fixed = {p.name: p.choices[int(rng.integers(len(p.choices)))] for p in scalars}
    cover = sp.covering_configs(fixed)
    keys = [b.key() for c in cover for b in sp.blocks(c)]
    assert len(cover) == 9 and len(set(keys)) == 2 + 5 * 18 + 2
    seen = {b.key() for c in sp.sample_unique(400, 1) for b in sp.blocks({**c, **fixed})}
    assert seen == set(keys)
    wrong = {"r": fixed["r"]} if len(scalars) > 1 else {"r": fixed["r"], "x": 1}
    with pytest.raises(ConfigError, match=r"fixes exactly the scalar genes .* \(got " + ", ".join(wrong) + r"\)"):
        sp.covering_configs(wrong)
