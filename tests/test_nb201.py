"""The NAS-Bench-201 cell space: architecture strings, counts against the benchmark's, networks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import get_space
from hwnas_deploy.spaces.nb201 import EDGES, OPS, arch_str, parse_arch_str, used_edges

from .test_spaces import count_macs_by_hooks

ALL_CELLS = [list(ops) for ops in itertools.product(range(len(OPS)), repeat=len(EDGES))]
# NAS-Bench-201's best CIFAR-10 cell, as its API prints it
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_every_one_of_the_15625_strings_round_trips_exactly():
    sp = get_space("nb201")
    strings = set()
    for ops in ALL_CELLS:
        text = arch_str(ops)
        assert parse_arch_str(text) == ops
        assert sp.arch_str(sp.validate(text)) == text  # kept as written, not canonicalised
        strings.add(text)
    assert len(strings) == 15625
    assert parse_arch_str(BEST) == [3, 3, 3, 1, 3, 3] and arch_str([3, 3, 3, 1, 3, 3]) == BEST


def test_counts_span_nas_bench_201s_published_ranges():
    """NAS-Bench-201 (CIFAR-10) lists params 0.073306-1.531546 M and FLOPs 7.78305-220.11969 M;
    CIFAR-100's largest network has 1.537396 M parameters."""
    sp = get_space("nb201")
    params = [sp.params_count({"ops": ops}) for ops in ALL_CELLS]
    macs = [sp.macs({"ops": ops}) for ops in ALL_CELLS]
    assert (min(params), max(params)) == (73306, 1531546)
    # its FLOPs also count the classifier's 10 bias additions, which our MACs (OFA's convention) do not
    assert ((min(macs) + 10) / 1e6, (max(macs) + 10) / 1e6) == (7.78305, 220.11969)
    from hwnas_deploy.spaces.nb201 import NASBench201

    assert NASBench201(num_classes=100).params_count({"ops": [3] * 6}) == 1537396


@pytest.mark.parametrize("text", [BEST, "|none~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|",
                                  "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_analytic_counts_equal_the_torch_module(text):
    sp = get_space("nb201")
    cfg = sp.validate(text)
    model = sp.build(cfg)
    x = sp.example_input(cfg)
    assert count_macs_by_hooks(model, x) == sp.macs(cfg)
    assert sum(p.numel() for p in model.parameters()) == sp.params_count(cfg)
    assert model(x).shape == (1, 10)


def test_edges_into_dead_nodes_and_out_of_zero_nodes_are_unused_genes():
    sp = get_space("nb201")
    # node 2 feeds only edge 3<-2, which is none: its two input edges change nothing
    a = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    assert used_edges(parse_arch_str(a)) == [True, False, False, True, True, False]
    assert sp.config_hash(a) == sp.config_hash(b)
    assert sp.canonical(a)["ops"] == [3, 0, 0, 1, 3, 0]
    x = sp.example_input(sp.validate(a))
    with torch.no_grad():
        assert torch.equal(sp.build(a)(x), sp.build(b)(x))
    # and a live edge does change the network
    c = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert sp.config_hash(c) != sp.config_hash(b)
    # nodes 1 and 2 only ever receive zeros: whatever leaves them is zero too (NAS-Bench-201's consider_zero)
    zero = "|none~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    assert sp.canonical(zero)["ops"] == [0, 0, 0, 4, 0, 0]
    assert len({sp.config_hash({"ops": ops}) for ops in ALL_CELLS}) == 9445


@pytest.mark.parametrize("text,message", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "has 2 node groups"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv'; operations: none, skip_connect"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "node 2 edge 'none~1': input 0 expected"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 takes 2 input edge"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 group 'none~0' is not of the form"),
])
def test_bad_architecture_strings_say_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        get_space("nb201").validate(text)


def test_a_cell_network_exports_to_onnx_and_matches_torch(tmp_path):
    import onnxruntime as ort

    from hwnas_deploy.export import export_subnet

    sp = get_space("nb201")
    art = export_subnet(sp, BEST, "onnx", tmp_path)
    cfg = sp.canonical(BEST)
    x = sp.example_input(cfg, seed=3)
    with torch.no_grad():
        want = sp.build(cfg).eval()(x).numpy()
    got = ort.InferenceSession(str(art.path)).run(None, {ort.InferenceSession(str(art.path)).get_inputs()[0].name:
                                                         x.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_the_cli_exports_an_architecture_string_and_lists_the_space(tmp_path):
    from .conftest import run_cli

    out = run_cli("export", "--space", "nb201", "--config", BEST, "--format", "onnx", "--out", "arts", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sp = get_space("nb201")
    assert (tmp_path / "arts" / f"nb201-{sp.config_hash(BEST)}-b1.onnx").is_file()
    listed = run_cli("spaces", cwd=tmp_path)
    assert listed.returncode == 0 and "nb201" in listed.stdout
    bad = run_cli("export", "--space", "nb201", "--config", BEST.replace("skip_connect", "skip"), "--format",
                  "onnx", "--out", "arts", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown operation 'skip'" in bad.stderr and "Traceback" not in bad.stderr
