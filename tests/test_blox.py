"""The BLOX macro space, its weight-sharing supernet, block-level pruning and regularized evolution."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import get_space
from hwnas_deploy.spaces.blox import DESIGNS, OPS, BloxCellBlock, build_op, cell_of_design, design_of_cell

from .test_spaces import count_macs_by_hooks

RAW_CELLS = [[[o1], [o2, p, i, s]] for o1, o2, p, i, s in itertools.product(range(3), range(3), (0, 1), (0, 1), (0, 1))]
MIXED = {"blocks": ["seq-skip-res:mbconv,bconv", "conv", "par:conv,bconv"]}


def reference_cell(cell, node1: dict, node2: dict, x):
    """BLOX's own cell semantics (blox/model/model.py Node/Cell) from the raw vector."""
    (o1,), (o2, prev, inp, sc) = cell
    n1 = node1[OPS[o1]](x)
    if prev or inp:
        out = node2[OPS[o2]](n1 + x if prev and inp else n1 if prev else x)
        return out + n1 if sc else out
    return n1


def test_72_blox_cells_are_45_distinct_blocks_and_each_computes_what_blox_computes():
    torch.manual_seed(0)
    c, x = 8, torch.randn(2, 8, 8, 8)
    node1 = {o: build_op(o, c).eval() for o in OPS}
    node2 = {o: build_op(o, c).eval() for o in OPS}
    valid = [cell for cell in RAW_CELLS if cell[1][1:] != [0, 0, 0]]
    assert len(valid) == 63 and len({design_of_cell(cell) for cell in valid}) == len(DESIGNS) == 45
    for cell in valid:
        d = design_of_cell(cell)
        module = BloxCellBlock(8, c, d).build().eval()
        (o1,), (o2, prev, inp, sc) = cell
        # the design's first operation is node 1's op, except where node 1 is dangling (node 2
        # fed by the input alone) or a parallel pair was put in canonical order
        if (prev, inp, sc) == (0, 1, 0):
            module.op1.load_state_dict(node2[OPS[o2]].state_dict())
        elif (prev, inp, sc) == (0, 1, 1) and o2 < o1:
            module.op1.load_state_dict(node2[OPS[o2]].state_dict())
            module.op2.load_state_dict(node1[OPS[o1]].state_dict())
        else:
            module.op1.load_state_dict(node1[OPS[o1]].state_dict())
            if module.op2 is not None:
                module.op2.load_state_dict(node2[OPS[o2]].state_dict())
        with torch.no_grad():
            want, got = reference_cell(cell, node1, node2, x), module(x)
        assert torch.allclose(got, want, atol=1e-5), (cell, DESIGNS[d].name)
    for k in range(45):
        assert design_of_cell(cell_of_design(k)) == k
    with pytest.raises(ConfigError, match="no output"):
        design_of_cell([[0], [1, 0, 0, 0]])


def test_all_91125_networks_have_distinct_hashes_and_names_and_arch_vectors_round_trip():
    sp = get_space("blox")
    assert sp.n_genes == 3 and len(sp.gene_bounds()[1]) == 3
    hashes = {sp.config_hash({"blocks": list(b)}) for b in itertools.product(range(45), repeat=3)}
    assert len(hashes) == 91125
    cfg = sp.validate(MIXED)
    assert sp.names(cfg) == MIXED["blocks"]
    assert sp.validate(sp.arch_vec(cfg)) == cfg
    # BLOX's README example: [[[0], [1, 1, 1, 1]], [[1], [1, 1, 0, 0]], [[0], [0, 1, 1, 0]]]
    assert sp.names([[[0], [1, 1, 1, 1]], [[1], [1, 1, 0, 0]], [[0], [0, 1, 1, 0]]]) == [
        "seq-skip-res:conv,mbconv", "seq:mbconv,mbconv", "seq-skip:conv,conv"]
    with pytest.raises(ConfigError, match="no block named 'sep:conv,conv'"):
        sp.validate({"blocks": ["sep:conv,conv", 0, 0]})
    with pytest.raises(ConfigError, match=r"blocks\[2\]=45 is not allowed"):
        sp.validate({"blocks": [0, 0, 45]})


@pytest.mark.parametrize("name", ["blox", "blox-mini"])
def test_analytic_counts_equal_the_torch_module(name):
    sp = get_space(name)
    for cfg in [{"blocks": [k, (k + 15) % 45, (k + 30) % 45]} for k in range(0, 45, 3)] + [MIXED]:
        model = sp.build(cfg)
        assert sp.params_count(cfg) == sum(p.numel() for p in model.parameters())
        assert sp.macs(cfg) == count_macs_by_hooks(model, sp.example_input(cfg))


def test_blox_networks_export_and_are_measured_on_local_cpu(tmp_path):
    import onnxruntime as ort

    from hwnas_deploy.export import export_subnet
    from hwnas_deploy.profiling import profile
    from hwnas_deploy.store import Store

    from .conftest import run_cli

    sp = get_space("blox-mini")
    art = export_subnet(sp, MIXED, "onnx", tmp_path)
    x = sp.example_input(MIXED, seed=3)
    with torch.no_grad():
        want = sp.build(MIXED)(x).numpy()
    sess = ort.InferenceSession(str(art.path))
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    with Store(str(tmp_path / "s.sqlite")) as store:
        report = profile("local-cpu", "blox-mini", 3, "onnxruntime", store, seed=1, artifacts_dir=tmp_path / "a",
                         progress=False)
        assert len(report.measured) == 3 and not report.failed
        rows = store.measurements(device="local-cpu")
        # what the store keeps is what the measurement layer returned, sample for sample
        assert {r["config_hash"]: r["median_ms"] for r in rows} == {h: m.median_ms for h, m in report.results.items()}
    out = run_cli("export", "--space", "blox", "--config", '{"blocks": ["conv", "seq:bconv,conv", 44]}', "--format",
                  "onnx", "--out", "arts", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    arch_vec = "[[[0], [1, 1, 1, 1]], [[1], [1, 1, 0, 0]], [[0], [0, 1, 1, 0]]]"  # BLOX's own format
    vec = run_cli("export", "--space", "blox-mini", "--config", arch_vec, "--format", "onnx", "--out", "arts",
                  cwd=tmp_path)
    want = sp.config_hash({"blocks": ["seq-skip-res:conv,mbconv", "seq:mbconv,mbconv", "seq-skip:conv,conv"]})
    assert vec.returncode == 0 and (tmp_path / "arts" / f"blox-mini-{want}-b1.onnx").is_file(), vec.stderr
    bad = run_cli("export", "--space", "blox", "--config", '{"blocks": ["conv", "seq:bconv,conv"]}', "--format",
                  "onnx", "--out", "arts", cwd=tmp_path)
    assert bad.returncode == 2 and "'blocks' must be a list of 3 values" in bad.stderr


def test_supernet_paths_are_the_extracted_networks_and_training_learns():
    from hwnas_deploy.supernet.blox import BloxSupernet, evaluate_blox, train_blox_supernet
    from hwnas_deploy.supernet.data import load_dataset

    sp = get_space("blox-mini")
    net = BloxSupernet(sp).eval()
    for cfg in [MIXED, {"blocks": [0, 1, 2]}, {"blocks": [44, 20, 9]}]:
        x = sp.example_input(cfg, batch=2)
        with torch.no_grad():
            assert torch.equal(net(x, sp.validate(cfg)), net.extract(cfg)(x))
    digits = load_dataset("digits")
    configs = sp.sample_unique(6, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in a parallel worker and alone: the same figures
    try:
        trained = train_blox_supernet(sp, digits, epochs=3, lr=0.1, seed=0)
        again = train_blox_supernet(sp, digits, epochs=1, seed=0)
        once = train_blox_supernet(sp, digits, epochs=1, seed=0)
        before = evaluate_blox(net, configs, digits)
        after = evaluate_blox(trained, configs, digits)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), once.state_dict().values(), strict=True))
    # one thread: untrained 0.075-0.125 (mean 0.106), 3 epochs 0.198-0.273 (mean 0.245); chance is 0.1
    print("untrained", before.round(3), "trained 3 epochs", after.round(3))
    assert after.mean() > before.mean() + 0.1 and after.min() > before.max() + 0.05


@pytest.mark.timing
def test_block_level_pruning_keeps_the_most_params_per_millisecond(tmp_path):
    from hwnas_deploy.predictors.lut import build_lut
    from hwnas_deploy.search.reduction import block_efficiency, block_scores, random_pruning

    sp = get_space("blox-mini")
    lut = build_lut("local-cpu", "blox-mini", "onnxruntime", [{"blocks": [k, k, k]} for k in range(45)],
                    tmp_path / "lut.json", progress=False)
    assert len(lut.entries) == 45 * 3 + 5  # stem, three reductions, head
    scores = block_scores(sp, lut)
    for s in range(3):
        cell = BloxCellBlock(16 >> s, 16 << s, 7)
        assert scores[s][7] == pytest.approx(cell.params() / lut.entries[cell.key()])
    for share, keep in [(0.0, 45), (0.5, 22), (0.7, 13), (0.9, 4)]:
        allowed = block_efficiency(sp, lut, share)
        assert [len(a) for a in allowed] == [keep] * 3
        for s, a in enumerate(allowed):
            assert scores[s][a].min() >= np.delete(scores[s], a).max(initial=-np.inf)
        assert [len(a) for a in random_pruning(sp, share, seed=3)] == [keep] * 3
    # the kernel-level model learns cell blocks too: 30 BLOX cells it never saw, ranked from the rest
    from scipy.stats import kendalltau

    from hwnas_deploy.predictors.kernel_level import KernelModel, parse_block_key
    from hwnas_deploy.spaces.nb201 import CellBlock

    cells = sorted(k for k in lut.entries if k.startswith("bloxcell"))
    held = set(np.random.default_rng(0).choice(cells, 30, replace=False).tolist())
    model = KernelModel(n_estimators=100).fit({k: v for k, v in lut.entries.items() if k not in held})
    pred = model.predict_blocks([parse_block_key(k) for k in sorted(held)])
    measured = [lut.entries[k] for k in sorted(held)]
    tau = kendalltau(pred, measured)[0]
    # the peer in the same run: the cells' own MACs. Both see the same noise of a 2-core machine's
    # 0.01-0.3 ms blocks (tau 0.45-0.89 for the model over days, 0.29-0.34 for MACs on one day)
    tau_macs = kendalltau([parse_block_key(k).macs() for k in sorted(held)], measured)[0]
    print(f"kernel-level model on 30 held-out BLOX cells: Kendall tau {tau:.3f} (their MACs: {tau_macs:.3f})")
    assert tau > tau_macs + 0.05
    nb = CellBlock(8, 16, "301204")
    assert parse_block_key(nb.key()) == nb
    macs = block_efficiency(sp, lut, 0.7, capacity="macs")
    assert [len(a) for a in macs] == [13] * 3 and macs != block_efficiency(sp, lut, 0.7)
    with pytest.raises(ConfigError, match="pruned share"):
        block_efficiency(sp, lut, 1.0)
    with pytest.raises(ConfigError, match="capacity 'flops' is not one of params, macs"):
        block_efficiency(sp, lut, 0.5, capacity="flops")


def test_regularized_evolution_stays_in_the_allowed_space_and_approaches_the_front():
    from pymoo.indicators.gd import GD
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    from hwnas_deploy.search.evolution import regularized_evolution

    rng = np.random.default_rng(0)
    table = rng.random((20, 20, 20, 2))  # a 3-gene problem with a known front
    F = table.reshape(-1, 2)
    ref = F[NonDominatedSorting().do(F, only_non_dominated_front=True)]
    allowed = [list(range(0, 20, 2)), list(range(20)), [3, 5, 7]]
    calls = []

    def evaluate(g):
        calls.append(tuple(g))
        return table[tuple(g)]

    res = regularized_evolution(evaluate, allowed, 250, population=10, sample=5, seed=1)
    assert len(calls) == len(set(calls)) == len(res.F) == 250  # nothing evaluated twice
    assert all(g[0] % 2 == 0 and g[2] in (3, 5, 7) for g in calls)
    gd = GD(ref)
    assert gd(res.front_after(250)) < gd(res.front_after(10))
    assert np.array_equal(regularized_evolution(lambda g: table[tuple(g)], allowed, 250, seed=1).genes, res.genes)
    small = copy.deepcopy(allowed)
    small[1] = [4]
    assert len(regularized_evolution(lambda g: table[tuple(g)], small, 1000, seed=0).F) == 30  # the whole space
