#!/usr/bin/env python3
"""Recheck a `qkv2ctx run --save DIR` independently, with numpy alone.

Reads DIR/problem.json, qkv.npy, out.npy and seq_lens.npy / cu_seqlens.npy, recomputes the context
with its own code and compares it with out.npy:

* FP32 / FP16 / BF16: attention in float64 on the saved (already rounded) inputs.
  Pass: max |out - ref| <= tol * max|qkv| (every output is a convex combination of V rows, so
  max|qkv| bounds |out|), tol = 1e-5 (fp32), 2e-3 (fp16), 1.6e-2 (bf16); see docs/cli.md.
* INT8: its own implementation of SPEC 5.0 steps 1-8 in float32, with the bound modes (row_max,
  fixed_bound, guarded) and the saved scales (which it re-derives in float32 and compares).
  Pass: no output more than 2 LSB off, at most 0.1 % more than 1 LSB off, and the row counters
  (fixed-bound underflow / overflow, repaired) equal to the saved ones.

Exit code 0 pass, 1 outside tolerance, 2 unreadable input.
"""
import argparse
import json
import os
import sys

import numpy as np

FLOAT_TOL = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.6e-2}
INT8_MAX_LSB = 2
INT8_MAX_RATE_OVER_1 = 1e-3
LOG2E_F32 = np.float32(1.4426950408889634)
GUARD_MIN_SUM = np.float32(2.0 ** -100)  # guarded: sums below this (or +inf) are failures
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


class RecheckError(Exception):
    pass


def load(directory):
    def path(name):
        return os.path.join(directory, name)

    try:
        with open(path("problem.json")) as f:
            meta = json.load(f)
        qkv = np.load(path("qkv.npy"))
        out = np.load(path("out.npy"))
        lens = None
        if meta["mask"] == "lengths":
            lens = np.load(path("seq_lens.npy")).astype(np.int64)
        elif meta["mask"] == "varlen":
            lens = np.load(path("cu_seqlens.npy")).astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise RecheckError(f"{directory}: {e}")
    for name, arr in (("qkv", qkv), ("out", out)):
        if list(arr.shape) != list(meta[name + "_shape"]):
            raise RecheckError(f"{name}.npy has shape {list(arr.shape)}, problem.json says {meta[name + '_shape']}")
    return meta, qkv, out, lens


def as_values(arr, dtype):
    """Stored array -> float32 values (INT8 stays integer)."""
    if dtype == "bf16":  # stored as uint16 bit patterns
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype == "int8":
        return arr.astype(np.int64)
    return arr.astype(np.float32)


def sequences(meta, qkv, out, lens):
    """Yield (q [rows,N,H], k [keys,N,H], v [keys,N,H], out [rows,N,H]) per sequence."""
    N, H = meta["heads"], meta["head_size"]
    E = N * H
    layout, mask, B = meta["layout"], meta["mask"], meta["batch"]
    if mask == "varlen":
        T = meta["num_tokens"]
        if layout == "chw32":  # [3E/32, T, 32] -> [T, 3E] with channels in [3][N][H] order
            qkv = qkv.transpose(1, 0, 2).reshape(T, 3 * E)
            out = out.transpose(1, 0, 2).reshape(T, E)
        # per token: trt [N][3][H], hf and chw32 [3][N][H]
        tok = qkv.reshape(T, N, 3, H).transpose(0, 2, 1, 3) if layout == "trt" else qkv.reshape(T, 3, N, H)
        o = out.reshape(T, N, H)
        for b in range(B):
            lo, hi = int(lens[b]), int(lens[b + 1])
            if not (0 <= lo <= hi <= T):
                raise RecheckError(f"cu_seqlens[{b}:{b + 2}] = [{lo}, {hi}] is not a valid range of {T} tokens")
            yield tok[lo:hi, 0], tok[lo:hi, 1], tok[lo:hi, 2], o[lo:hi]
        return
    S = meta["seqlen"]
    if layout == "trt":  # [S, B, 3E], per token [N][3][H]
        tok = qkv.reshape(S, B, N, 3, H).transpose(1, 0, 3, 2, 4)  # -> [B, S, 3, N, H]
        o = out.reshape(S, B, N, H).transpose(1, 0, 2, 3)
    else:  # hf: [B, S, 3E], per token [3][N][H]
        tok = qkv.reshape(B, S, 3, N, H)
        o = out.reshape(B, S, N, H)
    for b in range(B):
        keys = S if mask == "none" else min(max(int(lens[b]), 0), S)
        # Padded modes compute all S query rows over the valid keys.
        yield tok[b, :, 0], tok[b, :keys, 1], tok[b, :keys, 2], o[b]


# ---- floating types ----------------------------------------------------------------------------

def recheck_float(meta, qkv, out, lens):
    dtype = meta["dtype"]
    q_all = as_values(qkv, dtype)
    o_all = as_values(out, dtype)
    scale = 1.0 / np.sqrt(float(meta["scale_head_size"]))
    max_err, ref_max, non_finite = 0.0, 0.0, 0
    for q, k, v, o in sequences(meta, q_all, o_all, lens):
        if q.shape[0] == 0:
            continue
        o = o.astype(np.float64)
        non_finite += int(np.count_nonzero(~np.isfinite(o)))
        if k.shape[0] == 0:
            ref = np.zeros_like(o)  # no valid key: an all-zero context
        else:
            s = np.einsum("qnh,knh->nqk", q.astype(np.float64), k.astype(np.float64)) * scale
            s -= s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            ref = np.einsum("nqk,knh->qnh", p, v.astype(np.float64))
        with np.errstate(invalid="ignore"):
            err = np.abs(o - ref)
        if err.size:
            max_err = max(max_err, float(np.nanmax(np.where(np.isfinite(err), err, 0))))
            ref_max = max(ref_max, float(np.abs(ref).max()))
    input_max = float(np.abs(q_all).max()) if q_all.size else 0.0
    tol = FLOAT_TOL[dtype] * input_max
    ok = non_finite == 0 and max_err <= tol
    print(f"max |out - ref| = {max_err:.4g} (max |ref| = {ref_max:.4g}), non-finite outputs: {non_finite}")
    print(f"tolerance: {FLOAT_TOL[dtype]:g} x max|qkv| = {tol:.4g}: {'PASS' if ok else 'FAIL'}")
    return ok


# ---- INT8: SPEC 5.0 steps 1-8 in float32 ---------------------------------------------------------

def derive_scales(meta):
    """FP32 host arithmetic in TensorRT's order (SPEC 5.0)."""
    f32 = np.float32
    s, ctx, dq = f32(meta["qkv_scale"]), f32(meta["ctx_scale"]), f32(meta["dq_probs"])
    rsqrt_h = f32(1) / np.sqrt(f32(meta["scale_head_size"]))
    return {
        "scale_bmm1": (s * s) * rsqrt_h,
        "scale_softmax": f32(1) / dq,
        "scale_bmm2": (dq * s) / ctx,
        "fixed_bound": ((s * s) * rsqrt_h) * f32(16129),
        "max_relative_scale": (s / ctx) * (f32(1) / f32(127)),
    }


def fast_exp_ftz(y):
    """__expf with flush-to-zero: 2^(y*log2e) with the product rounded to float32 first."""
    t = (y * LOG2E_F32).astype(np.float32)
    with np.errstate(over="ignore"):
        r = np.exp2(t.astype(np.float64)).astype(np.float32)
    r[r < FLT_MIN] = 0
    r[t >= 128] = np.inf
    return r


def sat8_rne(x):
    """cvt.rni.sat.s8.f32: round half to even, saturate to [-128, 127], NaN -> 0."""
    x = np.where(np.isnan(x), np.float32(0), x)
    return np.rint(np.clip(x, -128, 127)).astype(np.int64)


def int8_rows(acc1, k, bound, probs_mode="trt"):
    """acc1 [N, rows, keys] int64 -> Pi8 [N, rows, keys], underflow / overflow row counts, and the
    step-8 scale per row [N, rows, 1] (scale_bmm2, or for probs=max_relative max_relative_scale / sum)."""
    x = acc1.astype(np.float32) * k["scale_bmm1"]  # exact conversion (|acc1| < 2^24), one rounding

    def probs(shift):
        e = fast_exp_ftz((x - shift).astype(np.float32))
        total = np.cumsum(e, axis=-1, dtype=np.float32)[..., -1:]  # key order, in float32
        return e, total

    row_max = x.max(axis=-1, keepdims=True)
    if bound == "row_max":
        e, total = probs(row_max)
        fail = np.zeros(total.shape, bool)
    else:
        e, total = probs(np.float32(k["fixed_bound"]))
        fail = ~(total >= GUARD_MIN_SUM) | (total == np.inf)
    overflow = fail & ~np.isfinite(total)
    underflow = fail & ~overflow
    if bound == "guarded" and fail.any():
        e2, total2 = probs(row_max)
        e = np.where(fail, e2, e)
        total = np.where(fail, total2, total)
    inv = np.where((total == 0) | np.isnan(total), np.float32(1), np.float32(1) / total).astype(np.float32)
    if probs_mode == "max_relative":  # Pi8 = RNE(127 e), e relative to the row max; the sum moves to step 8
        row_scale = (np.float32(k["max_relative_scale"]) * inv).astype(np.float32)
        return sat8_rne((e * np.float32(127)).astype(np.float32)), 0, 0, row_scale
    with np.errstate(invalid="ignore"):
        p = (e * inv).astype(np.float32)  # inf * 0 = NaN (overflowed rows), cvt maps NaN to 0
        scaled = (p * k["scale_softmax"]).astype(np.float32)
    return sat8_rne(scaled), int(underflow.sum()), int(overflow.sum()), np.float32(k["scale_bmm2"])


def recheck_int8(meta, qkv, out, lens):
    k = derive_scales(meta)
    ok = True
    for name, value in k.items():
        saved = np.float32(meta[name])
        if value != saved:
            print(f"derived {name}: recomputed {value!r} != saved {saved!r}")
            ok = False
    bound = meta["bound"]
    q_all, o_all = qkv.astype(np.int64), out.astype(np.int64)
    hist = np.zeros(4, np.int64)
    max_lsb, under, over = 0, 0, 0
    for q, kk, v, o in sequences(meta, q_all, o_all, lens):
        rows, keys = q.shape[0], kk.shape[0]
        if rows == 0:
            continue
        if keys == 0:
            ref = np.zeros_like(o)  # no valid key: zero context, never counted
        else:
            # Step 1 exactly: integer products summed in float64 (exact: |acc1| < 2^53).
            acc1 = np.rint(np.einsum("qnh,knh->nqk", q.astype(np.float64), kk.astype(np.float64))).astype(np.int64)
            pi8, u, ov, row_scale = int8_rows(acc1, k, bound, meta.get("probs", "trt"))
            under, over = under + u, over + ov
            acc2 = np.rint(np.einsum("nqk,knh->qnh", pi8.astype(np.float64), v.astype(np.float64))).astype(np.int64)
            # acc2 is [rows, N, H]; row_scale is a scalar or [N, rows, 1].
            scale = row_scale if np.ndim(row_scale) == 0 else np.transpose(row_scale, (1, 0, 2))
            ref = sat8_rne((acc2.astype(np.float32) * scale).astype(np.float32))
        diff = np.abs(o - ref)
        if diff.size:
            max_lsb = max(max_lsb, int(diff.max()))
            hist += np.bincount(np.minimum(diff, 3).ravel(), minlength=4)[:4]
    total = max(int(hist.sum()), 1)
    rate_over_1 = (hist[2] + hist[3]) / total
    print("|out - ref| in LSB: " + ", ".join(
        f"{label}: {n} ({100 * n / total:.4f}%)" for label, n in zip(("0", "1", "2", ">2"), hist)) + f"; max {max_lsb}")
    int8_ok = max_lsb <= INT8_MAX_LSB and rate_over_1 <= INT8_MAX_RATE_OVER_1
    print(f"tolerance: no output > {INT8_MAX_LSB} LSB off, at most {100 * INT8_MAX_RATE_OVER_1:.1f}% > 1 LSB off: "
          f"{'PASS' if int8_ok else 'FAIL'}")
    saved = meta.get("stats", {})
    repaired = (under + over) if bound == "guarded" else 0
    counted = {"fixed_bound_underflow_rows": under if bound != "row_max" else 0,
               "fixed_bound_overflow_rows": over if bound != "row_max" else 0,
               "repaired_rows": repaired}
    stats_ok = all(int(saved.get(key, -1)) == value for key, value in counted.items())
    print(f"row counters: recomputed underflow {counted['fixed_bound_underflow_rows']}, overflow "
          f"{counted['fixed_bound_overflow_rows']}, repaired {repaired}; saved "
          f"{saved.get('fixed_bound_underflow_rows')}, {saved.get('fixed_bound_overflow_rows')}, "
          f"{saved.get('repaired_rows')}: {'match' if stats_ok else 'MISMATCH'}")
    return ok and int8_ok and stats_ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="directory written by qkv2ctx run --save")
    args = ap.parse_args()
    try:
        meta, qkv, out, lens = load(args.dir)
        print(f"recheck {args.dir}: {meta['dtype']} N={meta['heads']} H={meta['head_size']} layout={meta['layout']} "
              f"mask={meta['mask']} B={meta['batch']} S={meta.get('seqlen', meta.get('max_seqlen'))}"
              + (f" bound={meta['bound']}" if meta["dtype"] == "int8" else "") + f", backend {meta['backend']}")
        if meta["dtype"] == "int8":
            ok = recheck_int8(meta, qkv, out, lens)
        elif meta["dtype"] in FLOAT_TOL:
            ok = recheck_float(meta, qkv, out, lens)
        else:
            raise RecheckError(f"dtype {meta['dtype']} is not one of fp32, fp16, bf16, int8")
    except RecheckError as e:
        print(f"recheck: error: {e}", file=sys.stderr)
        return 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
