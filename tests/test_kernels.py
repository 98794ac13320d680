"""The firmware's Cortex-M7 int8 kernels against the portable reference kernels, bit for bit.

Both are the C the board runs, built for this host (the DSP instructions emulated in C by
firmware/runtime/simd.h); the QEMU tests in test_mcu.py run the same comparison on the board.
"""

from __future__ import annotations

import ctypes

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnas_deploy.mcu.blob import pack_q15, quantize_multiplier, unpack_q15
from hwnas_deploy.mcu.host import host_library


class Shape(ctypes.Structure):
    _fields_ = [("h", ctypes.c_int), ("w", ctypes.c_int), ("c", ctypes.c_int)]


class ConvParams(ctypes.Structure):
    _fields_ = [
        ("is_", Shape), ("os", Shape), ("in_zp", ctypes.c_int32), ("out_zp", ctypes.c_int32),
        ("kh", ctypes.c_int), ("kw", ctypes.c_int), ("stride_h", ctypes.c_int), ("stride_w", ctypes.c_int),
        ("pad_top", ctypes.c_int), ("pad_left", ctypes.c_int),
        ("mult", ctypes.POINTER(ctypes.c_int32)), ("shift", ctypes.POINTER(ctypes.c_int32)),
        ("act_min", ctypes.c_int), ("act_max", ctypes.c_int), ("w_q15", ctypes.c_int),
    ]


def ptr(a: np.ndarray, ctype=ctypes.c_int8):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def requant_params(rng: np.random.Generator, n: int, scale_range=(1e-4, 0.45)) -> tuple[np.ndarray, np.ndarray]:
    scales = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]), n))
    pairs = [quantize_multiplier(float(s)) for s in scales]
    return np.array([q for q, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32)


def run_conv(kind: str, variant: str, x, w, bias, geometry: dict, mult, shift, zps, act,
             unpacked: bool = False) -> np.ndarray:
    """`unpacked`: the conv2d weights in the blob's INT8_Q15 layout (int16, groups of 4 reordered)."""
    lib = host_library()
    if unpacked:
        w = unpack_q15(w)
    (h, wd, c), (oh, ow, oc) = geometry["is"], geometry["os"]
    out = np.zeros((oh, ow, oc), np.int8)
    kw, pad_w = geometry.get("kw", geometry["k"]), geometry.get("pad_w", geometry["pad"])
    p = ConvParams(
        Shape(h, wd, c), Shape(oh, ow, oc), zps[0], zps[1], geometry["k"], kw, geometry["stride"],
        geometry["stride"], geometry["pad"], pad_w, ptr(mult, ctypes.c_int32), ptr(shift, ctypes.c_int32),
        act[0], act[1], int(unpacked),
    )
    name = {"conv": "hw_conv2d_s8", "depthwise": "hw_depthwise_conv2d_s8"}[kind] + ("_opt" if variant == "opt" else "")
    fn = getattr(lib, name)
    fn.argtypes = [ctypes.POINTER(ConvParams)] + [ctypes.c_void_p] * 4
    fn(ctypes.byref(p), x.ctypes.data, w.ctypes.data, bias.ctypes.data if bias is not None else None, out.ctypes.data)
    return out


conv_cases = st.fixed_dictionaries({
    "h": st.integers(1, 11), "w": st.integers(1, 11), "c": st.sampled_from([1, 3, 4, 5, 8, 12, 16, 32, 36, 48]),
    "oc": st.sampled_from([1, 2, 3, 7, 16, 17, 33, 40]), "k": st.sampled_from([1, 3, 5, 7]),
    "stride": st.sampled_from([1, 2]),
    "pad": st.sampled_from(["valid", "same"]), "in_zp": st.integers(-128, 127), "out_zp": st.integers(-128, 127),
    "relu6": st.booleans(), "bias": st.booleans(), "left_shift_channel": st.booleans(),
    "seed": st.integers(0, 2**31),
    # a kernel width other than its height (DS-CNN's 10 x 4 over one channel): k * kw * c a
    # multiple of 4 with c not one
    "kw": st.sampled_from([None, None, 4, 2]),
})


def make_case(case: dict, depthwise: bool):
    rng = np.random.default_rng(case["seed"])
    h, wd, c, k, s = case["h"], case["w"], case["c"], case["k"], case["stride"]
    kw = case.get("kw") or k
    oc = c if depthwise else case["oc"]
    pad = (k - 1) // 2 if case["pad"] == "same" else 0
    pad_w = (kw - 1) // 2 if case["pad"] == "same" else 0
    oh, ow = (h + 2 * pad - k) // s + 1, (wd + 2 * pad_w - kw) // s + 1
    if oh < 1 or ow < 1:
        return None
    x = rng.integers(-128, 128, (h, wd, c), dtype=np.int8)
    w = rng.integers(-127, 128, (1, k, kw, c) if depthwise else (oc, k, kw, c), dtype=np.int8)
    bias = rng.integers(-20000, 20000, oc, dtype=np.int32) if case["bias"] else None
    mult, shift = requant_params(rng, oc, (1e-4, 0.45))
    if case["left_shift_channel"]:  # a channel with a left shift: the general requantisation modes
        mult[0], shift[0] = quantize_multiplier(1.7)
    act = (case["out_zp"], min(127, case["out_zp"] + 90)) if case["relu6"] else (-128, 127)
    geometry = {"is": (h, wd, c), "os": (oh, ow, oc), "k": k, "kw": kw, "stride": s, "pad": pad, "pad_w": pad_w}
    return x, w, bias, geometry, mult, shift, (case["in_zp"], case["out_zp"]), act


@settings(max_examples=300, deadline=None)
@given(conv_cases)
def test_optimised_conv_is_bit_exact(case):
    args = make_case(case, depthwise=False)
    if args is None:
        return
    reference = run_conv("conv", "portable", *args)
    np.testing.assert_array_equal(run_conv("conv", "opt", *args), reference)
    if args[1][0].size % 4 == 0:  # weights stored unpacked (blob v2): both kernel sets read them
        np.testing.assert_array_equal(pack_q15(unpack_q15(args[1])), args[1])
        np.testing.assert_array_equal(run_conv("conv", "opt", *args, unpacked=True), reference)
        np.testing.assert_array_equal(run_conv("conv", "portable", *args, unpacked=True), reference)


@settings(max_examples=300, deadline=None)
@given(conv_cases)
def test_optimised_depthwise_is_bit_exact(case):
    args = make_case(case, depthwise=True)
    if args is None:
        return
    np.testing.assert_array_equal(run_conv("depthwise", "opt", *args), run_conv("depthwise", "portable", *args))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(-128, 127), st.integers(-128, 127), st.integers(0, 2**31))
def test_optimised_fully_connected_is_bit_exact(n_in, n_out, in_zp, out_zp, seed):
    rng = np.random.default_rng(seed)
    lib = host_library()
    x = rng.integers(-128, 128, n_in, dtype=np.int8)
    w = rng.integers(-127, 128, (n_out, n_in), dtype=np.int8)
    bias = rng.integers(-50000, 50000, n_out, dtype=np.int32)
    mult, shift = requant_params(rng, n_out, (1e-4, 1.8))
    outs = []
    for name in ("hw_fully_connected_s8", "hw_fully_connected_s8_opt"):
        out = np.zeros(n_out, np.int8)
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int, ctypes.c_int]
        fn(x.ctypes.data, n_in, in_zp, w.ctypes.data, bias.ctypes.data, out.ctypes.data, n_out, out_zp,
           mult.ctypes.data, shift.ctypes.data, -128, 127)
        outs.append(out)
    np.testing.assert_array_equal(outs[1], outs[0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(-128, 127), st.integers(-128, 127), st.integers(0, 2**31))
def test_single_rounding_fully_connected_is_tflites_64_bit_formula(n_in, n_out, in_zp, out_zp, seed):
    """LiteRT's reference per-channel FULLY_CONNECTED requantises (acc * m + 2^(30 - shift)) >> (31 -
    shift) in 64 bits: one rounding (found comparing blobs with LiteRT: the two-rounding kernel was
    one step off on 1-2 of 1000 classifier outputs)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, n_in, dtype=np.int8)
    w = rng.integers(-127, 128, (n_out, n_in), dtype=np.int8)
    bias = rng.integers(-50000, 50000, n_out, dtype=np.int32)
    mult, shift = requant_params(rng, n_out, (1e-4, 1.8))
    acc = w.astype(np.int64) @ (x.astype(np.int64) - in_zp) + bias
    total = 31 - shift.astype(np.int64)
    want = ((acc * mult.astype(np.int64) + (np.int64(1) << (total - 1))) >> total) + out_zp
    for name in ("hw_fully_connected_s8_single", "hw_fully_connected_s8_single_opt"):  # portable, Cortex-M7
        out = np.zeros(n_out, np.int8)
        fn = getattr(host_library(), name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int, ctypes.c_int]
        fn(x.ctypes.data, n_in, in_zp, w.ctypes.data, bias.ctypes.data, out.ctypes.data, n_out, out_zp,
           mult.ctypes.data, shift.ctypes.data, -128, 127)
        np.testing.assert_array_equal(out, np.clip(want, -128, 127).astype(np.int8), err_msg=name)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(2.0, 4.0),
       st.integers(-128, 127), st.integers(-128, 127), st.booleans(), st.integers(0, 2**31))
def test_optimised_add_is_bit_exact(n, a_scale, b_scale, out_ratio, a_zp, b_zp, relu, seed):
    """TFLite's int8 ADD (the blob's parameters, computed as hwnas_deploy.mcu.blob does), below and
    above the size from which the Cortex-M7 kernel rescales through tables."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    twice_max = 2 * max(a_scale, b_scale)
    out_scale = max(a_scale, b_scale) * out_ratio  # calibrated outputs span about the sum's range
    out_zp = int(np.clip(round((a_zp * a_scale + b_zp * b_scale) / out_scale), -128, 127))  # and are centred
    (am, ash), (bm, bsh) = quantize_multiplier(a_scale / twice_max), quantize_multiplier(b_scale / twice_max)
    om, osh = quantize_multiplier(twice_max / ((1 << 20) * out_scale))
    act = (out_zp, 127) if relu else (-128, 127)
    outs = []
    for name in ("hw_add_s8", "hw_add_s8_opt"):
        out = np.zeros(n, np.int8)
        fn = getattr(host_library(), name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p,
                       ctypes.c_int32, ctypes.c_int] + [ctypes.c_int32] * 9
        fn(a.ctypes.data, a_zp, b.ctypes.data, b_zp, out.ctypes.data, out_zp, n, 20, am, ash, bm, bsh, om, osh, *act)
        outs.append(out)
    # rounding is exercised, not saturation (unless the zero points push the output's to an end)
    assert n < 100 or abs(out_zp) > 100 or np.mean(np.abs(outs[0].astype(int)) < 127) > 0.3
    np.testing.assert_array_equal(outs[1], outs[0])


def test_requantisation_extremes_are_bit_exact():
    """Every shift the fast path takes, multipliers across [2^30, 2^31), accumulators of both signs
    spread so that outputs land inside int8 (not all saturated) and rounding ties occur."""
    rng = np.random.default_rng(7)
    for shift_target in range(-20, 0):
        e = -shift_target
        case = {"h": 6, "w": 6, "c": 8, "oc": 6, "k": 1, "stride": 1, "pad": "valid", "in_zp": 0, "out_zp": 3,
                "relu6": False, "bias": True, "left_shift_channel": False, "seed": int(rng.integers(1 << 30))}
        x, w, bias, geometry, mult, shift, zps, act = make_case(case, depthwise=False)
        x[:] = rng.integers(-2, 3, x.shape)
        w[:] = rng.integers(-2, 3, w.shape)
        shift[:] = shift_target
        mult[:] = rng.integers(1 << 30, (1 << 31) - 1, len(mult), dtype=np.int64).astype(np.int32)
        bias[:] = rng.integers(-(100 << e), 100 << e, len(bias), dtype=np.int64).astype(np.int32)
        args = (x, w, bias, geometry, mult, shift, zps, act)
        out = run_conv("conv", "opt", *args)
        assert np.mean(np.abs(out.astype(int)) < 127) > 0.5  # the test exercises rounding, not saturation
        np.testing.assert_array_equal(out, run_conv("conv", "portable", *args))


class ConvParamsF32(ctypes.Structure):
    _fields_ = [
        ("is_", Shape), ("os", Shape), ("kh", ctypes.c_int), ("kw", ctypes.c_int), ("stride_h", ctypes.c_int),
        ("stride_w", ctypes.c_int), ("pad_top", ctypes.c_int), ("pad_left", ctypes.c_int),
        ("act_min", ctypes.c_float), ("act_max", ctypes.c_float),
    ]


@settings(max_examples=60, deadline=None)
@given(conv_cases, st.booleans())
def test_float32_conv_and_depthwise_match_torch(case, depthwise):
    import torch

    args = make_case(case, depthwise)
    if args is None:
        return
    _, _, _, geometry, _, _, _, _ = args
    rng = np.random.default_rng(case["seed"])
    (h, wd, c), (oh, ow, oc) = geometry["is"], geometry["os"]
    k, kw, s, pad, pad_w = geometry["k"], geometry["kw"], geometry["stride"], geometry["pad"], geometry["pad_w"]
    x = rng.standard_normal((h, wd, c)).astype(np.float32)
    w = rng.standard_normal((1, k, kw, c) if depthwise else (oc, k, kw, c)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    lo, hi = (0.0, 6.0) if case["relu6"] else (-3.4e38, 3.4e38)
    out = np.zeros((oh, ow, oc), np.float32)
    p = ConvParamsF32(Shape(h, wd, c), Shape(oh, ow, oc), k, kw, s, s, pad, pad_w, lo, hi)
    fn = getattr(host_library(), "hw_depthwise_conv2d_f32" if depthwise else "hw_conv2d_f32")
    fn.argtypes = [ctypes.POINTER(ConvParamsF32)] + [ctypes.c_void_p] * 4
    fn(ctypes.byref(p), x.ctypes.data, w.ctypes.data, bias.ctypes.data, out.ctypes.data)
    xt = torch.from_numpy(x).permute(2, 0, 1)[None]
    wt = torch.from_numpy(w).permute(3, 0, 1, 2) if depthwise else torch.from_numpy(w).permute(0, 3, 1, 2)
    groups = c if depthwise else 1
    ref = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(bias), stride=s, padding=(pad, pad_w), groups=groups)
    ref = ref[0].permute(1, 2, 0).clamp(lo, hi).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-5)
