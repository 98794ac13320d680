"""Elastic supernet: datasets, weight sharing, extraction, training (deterministic, resumable),
and the accuracy objective cached in the store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.export import export_model
from hwnas_deploy.store import Store
from hwnas_deploy.supernet import ElasticSupernet, load_dataset, recalibrate_bn, space_for
from hwnas_deploy.supernet.elastic import slice_like
from hwnas_deploy.supernet.train import TrainSettings, load_supernet, smallest_config, train_supernet
from tests.conftest import run_cli

TINY = dict(epochs=2, batch_size=32, train_limit=256, max_resolution=64, n_random=1, lr=0.1)
#: for what is the same whatever a run learns (resuming, the loss's terms): a quarter of TINY's steps
CHEAP = dict(TINY, train_limit=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("sn") / "supernet.pt"
    result = train_supernet(TrainSettings(**TINY), path, progress=False, data=digits)
    return path, result


def test_digits_is_split_per_class_and_standardised(digits):
    d = digits.describe()
    assert d == {"name": "digits", "classes": 10, "train": 1078, "val": 359, "test": 360, "image": [3, 8, 8]}
    assert abs(float(digits.x_train.mean())) < 1e-4 and abs(float(digits.x_train.std()) - 1) < 1e-3
    assert set(np.unique(digits.y_val)) == set(range(10))  # every class in every split
    x, y = next(digits.batches("val", 16, 80))
    assert x.shape == (16, 3, 80, 80) and y.dtype == torch.int64


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((4, 8, 8)), "y_train": np.arange(4)}, r"missing array\(s\) \['x_val', 'y_val'\]"),
    ({"x_train": np.zeros((4, 8)), "y_train": np.arange(4), "x_val": np.zeros((2, 8)), "y_val": np.arange(2)},
     r"train x: images must be N x C x H x W.*shape \(4, 8\)"),
    ({"x_train": np.zeros((4, 8, 8)), "y_train": np.array([0, 1, 2, 3]), "x_val": np.zeros((0, 8, 8)),
      "y_val": np.zeros(0, int)}, r"val: the split is empty"),
    ({"x_train": np.zeros((4, 8, 8)), "y_train": np.array([0, 1, 1, -1]), "x_val": np.zeros((2, 8, 8)),
      "y_val": np.array([0, 1])}, r"train labels must lie in 0\.\.1; found -1\.\.1"),
    ({"x_train": np.zeros((4, 8, 8)), "y_train": np.arange(3), "x_val": np.zeros((2, 8, 8)),
      "y_val": np.array([0, 1])}, r"train: 4 images but labels of shape \(3,\)"),
    ({"x_train": np.zeros((4, 8, 8, 5)), "y_train": np.arange(4), "x_val": np.zeros((2, 8, 8, 5)),
      "y_val": np.array([0, 1])}, r"need 1 or 3 channels"),
])
def test_a_bad_npz_dataset_is_refused_naming_what_is_wrong(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=message):
        load_dataset(path)


def test_an_image_folder_loads_with_one_class_per_subfolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_dataset(tmp_path)
    assert d.num_classes == 2 and d.describe()["train"] == 12 and d.x_train.shape[1:] == (3, 12, 12)
    with pytest.raises(ConfigError, match="is not 'digits', an existing .npz file or an image folder"):
        load_dataset(tmp_path / "nope.npz")


def test_slices_are_channel_prefixes_and_kernel_centres():
    w = torch.arange(4 * 3 * 7 * 7, dtype=torch.float32).reshape(4, 3, 7, 7)
    s = slice_like(w, (2, 1, 3, 3))
    assert torch.equal(s, w[:2, :1, 2:5, 2:5])
    with pytest.raises(ValueError):
        slice_like(w, (5, 3, 7, 7))


def test_a_subnetwork_shares_the_supernet_weights_and_extracts_to_the_same_function(digits):
    sp = space_for("mcu-mbnet", 10)
    sn = ElasticSupernet(sp, seed=0)
    cfg = sp.sample_unique(1, 7)[0] | {"r": 64}
    x, _ = next(digits.batches("train", 16, 64))
    logits = sn(x, cfg)
    logits.sum().backward()
    used = {n for n, p in sn.net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    slots = set(sp.block_slots(cfg))
    assert {int(n.split(".")[0]) for n in used} == slots  # exactly the blocks the sub-network runs
    module = sn.extract(cfg).train()  # BatchNorm on batch statistics, as the supernet's forward
    with torch.no_grad():
        assert torch.allclose(module(x), logits, atol=1e-5)
    assert sum(p.numel() for p in module.parameters()) == sp.params_count(cfg)


def test_reordering_channels_keeps_the_largest_network_exactly(digits):
    sp = space_for("mcu-mbnet", 10)
    sn = ElasticSupernet(sp, seed=1)
    big = sp.max_config() | {"r": 64}
    x, _ = next(digits.batches("train", 32, 64))
    opt = torch.optim.SGD(sn.parameters(), lr=0.1, momentum=0.9)
    sn(x, big).sum().backward()
    opt.step()  # momentum buffers now exist
    block = sn.net[5].body  # an MBConv with expansion
    order = torch.argsort(block[-2].weight.abs().sum(dim=(0, 2, 3)), descending=True)
    expand_w, expand_m = block[0].weight.clone(), opt.state[block[0].weight]["momentum_buffer"].clone()
    with torch.no_grad():
        before = recalibrate_bn(sn.extract(big), [x])(x)
        sn.reorder_channels(opt)
        after = recalibrate_bn(sn.extract(big), [x])(x)
    assert torch.allclose(before, after, atol=1e-4)
    importance = block[-2].weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # most important expand channels first
    assert torch.equal(block[0].weight, expand_w[order])
    assert torch.equal(opt.state[block[0].weight]["momentum_buffer"], expand_m[order])  # momentum moved along


def test_training_learns_is_deterministic_and_resumes_exactly(trained, digits, tmp_path):
    _, result = trained
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[-1]["val_acc_largest"] > 0.2  # 10 classes: chance is 0.1
    # a run in two parts (killed after epoch 1) ends with the weights of the same run in one
    whole, part = tmp_path / "whole.pt", tmp_path / "part.pt"
    train_supernet(TrainSettings(**CHEAP), whole, progress=False, data=digits)

    def kill(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(TrainSettings(**CHEAP), part, progress=False, data=digits, on_epoch=kill)
    resumed = train_supernet(TrainSettings(**CHEAP), part, progress=False, data=digits)
    assert resumed.resumed_from == 1
    a = torch.load(whole, weights_only=True)["state"]
    b = torch.load(part, weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0\.1 -> 0\.2\)"):
        train_supernet(TrainSettings(**{**CHEAP, "lr": 0.2}), part, progress=False, data=digits)


def test_extracted_subnetworks_export_and_match(trained, tmp_path):
    """ONNX, TFLite and the firmware blob of a sub-network taken from the trained supernet compute
    what the extracted module computes, on an input none of the exports' own checks saw."""
    supernet, meta = load_supernet(trained[0])
    sp = supernet.space
    cfg = smallest_config(sp) | {"r": 64}
    module = supernet.extract(cfg)
    example = torch.randn(1, 3, 64, 64)
    from hwnas_deploy.export import cosine_similarity
    from hwnas_deploy.runtimes import load_runner

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        want = module.eval()(x).numpy()
    onnx = export_model(module, example, "onnx", tmp_path / "s.onnx")
    assert np.max(np.abs(load_runner(onnx)(x.numpy()) - want)) < 1e-4
    tflite = export_model(module, example, "tflite", tmp_path / "s.tflite")
    assert np.max(np.abs(load_runner(tflite)(x.numpy()) - want)) < 1e-3
    blob = export_model(module, example, "blob", tmp_path / "s.hwnb")
    got = load_runner(blob)(x.numpy())  # int8 on the firmware's host kernels
    assert got.shape == want.shape and cosine_similarity(got.ravel(), want.ravel()) > 0.9


def test_a_checkpoint_is_checked_on_load(trained, tmp_path):
    """One flipped bit in one weight, a truncated file and a pickle that is not plain data are
    each refused with the file's name (and the pickle is never run); the original loads."""
    path, _ = trained
    load_supernet(path)
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k, v in ckpt["state"].items() if v.dtype == torch.float32 and v.numel() > 1)
    ckpt["state"][name].view(torch.int32).view(-1)[0] ^= 1  # the lowest mantissa bit of one weight
    torch.save(ckpt, tmp_path / "flipped.pt")
    with pytest.raises(ConfigError, match=r"flipped\.pt: its content does not match its sha256"):
        load_supernet(tmp_path / "flipped.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"cut\.pt: not a readable supernet checkpoint \(truncated"):
        load_supernet(tmp_path / "cut.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "hwnas-supernet", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match=r"evil\.pt: refused: it holds objects other than tensors") as err:
        load_supernet(tmp_path / "evil.pt")
    assert "weights_only" not in str(err.value)


def test_the_accuracy_objective_is_cached_per_checkpoint_and_network(trained, tmp_path):
    from hwnas_deploy.search.objectives import parse_objective
    from hwnas_deploy.spaces import get_space

    path, _ = trained
    sp = get_space("mcu-mbnet")
    cfgs = [smallest_config(sp) | {"r": 64}, sp.max_config() | {"r": 64}]
    with Store(str(tmp_path / "s.sqlite")) as store:
        obj = parse_objective(f"accuracy=supernet:{path}", sp, store)
        assert obj.maximise
        first = obj.evaluate(cfgs)
        # the supernet's own evaluation of each network, in %, on the validation split
        from hwnas_deploy.supernet.data import load_dataset
        from hwnas_deploy.supernet.train import evaluate

        supernet, _ = load_supernet(path)
        data = load_dataset("digits")
        direct = [100.0 * evaluate(supernet, sp.canonical(c), data, "val", 256) for c in cfgs]
        np.testing.assert_allclose(first, direct, rtol=0, atol=1e-9)
        again = parse_objective(f"accuracy=supernet:{path}", sp, store).evaluate(cfgs)  # from the store
        assert np.array_equal(first, again)
        from hwnas_deploy.artifact import sha256_file

        cached = store.score(f"supernet:{sha256_file(path)}", sp.name, sp.config_hash(cfgs[1]), "val_accuracy")
        assert cached == pytest.approx(first[1])
    with pytest.raises(ConfigError, match="the supernet is for space 'mcu-mbnet', the search for 'ofa-mbv3-w1.0'"):
        parse_objective(f"accuracy=supernet:{path}", get_space("ofa-mbv3-w1.0"))


def test_cli_trains_and_estimates(tmp_path):
    out = run_cli("train-supernet", "--epochs", "1", "--train-limit", "32", "--batch-size", "32", "--max-resolution",
                  "64", "--n-random", "0", "--out", "sn.pt", "--quiet", cwd=tmp_path, check=True)
    assert "sn.pt: 1 epochs (resumed after 0)" in out.stdout
    cfg = json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 0.35, "r": 64})
    est = run_cli("accuracy", "--supernet", "sn.pt", "--config", cfg, cwd=tmp_path, check=True)
    from hwnas_deploy.supernet.objective import SupernetAccuracy

    want = SupernetAccuracy(tmp_path / "sn.pt")([json.loads(cfg)])[0]  # the library's number, as printed
    assert json.loads(est.stdout)["val_accuracy"] == round(want, 3)
    bad = run_cli("train-supernet", "--dataset", "nope.npz", "--out", "x.pt", cwd=tmp_path)
    assert bad.returncode == 2 and "'nope.npz' is not 'digits'" in bad.stderr


def test_the_rank_loss_asks_better_networks_for_lower_loss():
    from hwnas_deploy.supernet.train import rank_loss

    acc, rank = np.array([0.9, 0.5]), np.array([0, 1])
    ordered = rank_loss([torch.tensor(0.2), torch.tensor(0.5)], acc, rank, margin=0.1)
    inverted = rank_loss([torch.tensor(0.5), torch.tensor(0.2)], acc, rank, margin=0.1)
    assert float(ordered) == 0.0 and float(inverted) == pytest.approx(0.4)  # weight 1/(1+0) * (0.1 + 0.3), 1 pair
    assert float(rank_loss([torch.tensor(0.5), torch.tensor(0.2)], np.array([0.5, 0.5]), rank, 0.1)) == 0.0


def test_pareto_rank_training_uses_its_reference(tmp_path, digits):
    from hwnas_deploy.supernet.train import Reference

    sp = space_for("mcu-mbnet", 10)
    cfgs = sp.sample_unique(4, 11)
    ref = tmp_path / "ref.jsonl"
    rows = [{"config": c | {"r": 64}, "accuracy": a, "cost": k} for c, a, k in
            zip(cfgs, [0.9, 0.8, 0.7, 0.6], [3.0, 1.0, 2.0, 0.5], strict=True)]
    ref.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = Reference.load(ref, sp)
    assert list(loaded.rank) == [0, 0, 1, 0]  # (0.7, 2.0) is dominated by (0.8, 1.0)
    settings = TrainSettings(**{**CHEAP, "epochs": 1}, strategy="pareto-rank", reference=str(ref))
    result = train_supernet(settings, tmp_path / "pr.pt", progress=False, data=digits)
    # the reference networks' distillation and ranking terms are part of every step's loss: the
    # same seeded run without them (sandwich) trains otherwise
    plain = train_supernet(TrainSettings(**{**CHEAP, "epochs": 1}), tmp_path / "sw.pt", progress=False, data=digits)
    assert result.history[0]["loss"] != plain.history[0]["loss"]
    with pytest.raises(ConfigError, match="the pareto-rank strategy needs reference networks"):
        TrainSettings(strategy="pareto-rank")
    (tmp_path / "bad.jsonl").write_text('{"config": {}, "accuracy": 1}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: a reference line is"):
        Reference.load(tmp_path / "bad.jsonl", sp)


def test_the_ofa_mbv3_structure_shares_weights_too():
    """Squeeze-and-excitation and hard-swish blocks slice the same way (OFA's own space)."""
    sp = space_for("ofa-mbv3-w1.0", 10)
    sn = ElasticSupernet(sp, seed=0)
    cfg = sp.sample_unique(1, 3)[0] | {"r": 128}
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        shared = sn(x, cfg)
        alone = sn.extract(cfg).train()(x)
    assert torch.allclose(alone, shared, atol=1e-4)
    assert sum(p.numel() for p in sn.extract(cfg).parameters()) == sp.params_count(cfg)


def test_the_rank_loss_never_pushes_the_worse_network_up():
    from hwnas_deploy.supernet.train import rank_loss

    better, worse = torch.tensor(0.5, requires_grad=True), torch.tensor(0.2, requires_grad=True)
    rank_loss([better, worse], np.array([0.9, 0.5]), np.array([0, 1]), margin=0.1).backward()
    assert better.grad.item() == 1.0 and worse.grad is None
