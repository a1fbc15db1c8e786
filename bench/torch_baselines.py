#!/usr/bin/env python3
"""PyTorch SDPA baselines for `qkv2ctx bench` (which spawns this script with --torch-baselines).

Reads the same shapes CSV (name,dtype,heads,head_size,seqlen,batch,mask; '#' comments), draws the
same sequence lengths as qkv2ctx (SplitMix64 seeded with seed ^ fnv1a64(name): lengths mode in
[S/2, S], varlen in [S/4, S]) and times torch.nn.functional.scaled_dot_product_attention with each of
the flash, cuDNN and memory-efficient backends: CUDA events around each call, --warmup untimed calls,
the median of --iters, inputs rotated over >= 4 sets whose total exceeds 2x the L2 size.

Inputs: q, k, v are [B, N, S, D] strided views of one packed QKV tensor [B, S, 3, N, D] (what a
model's fused QKV projection gives). Mask modes:
  none     no mask
  lengths  padded to S with a boolean key-padding mask [B, 1, 1, S]
  varlen   nested (jagged) tensors over the packed tokens where the backend takes them (q, k, v
           contiguous [T, N, D], built outside the timing), else padded to S with the key mask
INT8 rows: no PyTorch baseline ('n/a').

Output: one JSON object per line: {"info": ...} first, then {"name", "backend", "us", "note"} per
shape and backend ("us": null when not available, "note" says why or which variant ran), or
{"error": ...} when PyTorch or CUDA is missing. `--list` prints the lengths only (no PyTorch needed;
`qkv2ctx bench --list` prints the same lines).
"""
import argparse
import itertools
import json
import math
import sys
import warnings

MASK64 = (1 << 64) - 1
BACKENDS = ("torch-flash", "torch-cudnn", "torch-efficient")


def emit(obj):
    print(json.dumps(obj), flush=True)


def read_shapes(path):
    shapes = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != 7:
                raise ValueError(f"{path}:{lineno}: expected 7 columns, got {len(cells)}")
            if cells[0] == "name":
                continue
            name, dtype, heads, head_size, seqlen, batch, mask = cells
            shapes.append(dict(name=name, dtype=dtype, heads=int(heads), head_size=int(head_size),
                               seqlen=int(seqlen), batch=int(batch), mask=mask))
    return shapes


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & MASK64
    return h


class SplitMix64:
    """The generator of tools/qkv2ctx/problem.hpp, bit for bit."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform_int(self, lo, hi):
        return lo + self.next() % (hi - lo + 1)


def lengths_of(shape, seed):
    S, B = shape["seqlen"], shape["batch"]
    if shape["mask"] == "none":
        return [S] * B
    lo = S // 4 if shape["mask"] == "varlen" else S // 2
    rng = SplitMix64(seed ^ fnv1a64(shape["name"].encode()))
    return [rng.uniform_int(lo, S) for _ in range(B)]


def list_line(shape, seed):
    lens = lengths_of(shape, seed)
    tokens = sum(lens) if shape["mask"] == "varlen" else shape["batch"] * shape["seqlen"]
    shown = "none" if shape["mask"] == "none" else ",".join(map(str, lens))
    return f"{shape['name']} tokens={tokens} lengths={shown}"


def short(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


class Bench:
    def __init__(self, torch, iters, warmup):
        self.torch = torch
        self.iters = iters
        self.warmup = warmup
        props = torch.cuda.get_device_properties(0)
        self.l2 = getattr(props, "L2_cache_size", 50 << 20)

    def num_sets(self, set_bytes):
        free, _ = self.torch.cuda.mem_get_info()
        want = max(4, math.ceil(2 * self.l2 / max(set_bytes, 1)) + 1)
        fit = int(0.6 * free / max(set_bytes, 1))
        if fit < 2:
            raise RuntimeError("two input sets do not fit in the free device memory")
        return min(want, 4096, fit)

    def time(self, calls):
        """calls: one zero-argument callable per rotated set. Returns the median in µs."""
        torch = self.torch
        outs = [None] * len(calls)  # keep each set's last output: outputs rotate too
        k = 0
        for _ in range(self.warmup):
            outs[k % len(calls)] = calls[k % len(calls)]()
            k += 1
        start = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        stop = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        for i in range(self.iters):
            start[i].record()
            outs[k % len(calls)] = calls[k % len(calls)]()
            stop[i].record()
            k += 1
        torch.cuda.synchronize()
        ms = sorted(s.elapsed_time(e) for s, e in zip(start, stop))
        n = len(ms)
        return 1e3 * (ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2]))


def padded_sets(bench, shape, dtype, lens, with_mask):
    """q, k, v as [B, N, S, D] views of packed [B, S, 3, N, D] tensors, one per rotated set."""
    torch = bench.torch
    B, S, N, D = shape["batch"], shape["seqlen"], shape["heads"], shape["head_size"]
    es = torch.tensor([], dtype=dtype).element_size()
    n = bench.num_sets(4 * B * S * N * D * es)  # packed QKV + output
    mask = None
    if with_mask:
        valid = torch.arange(S, device="cuda")[None, :] < torch.tensor(lens, device="cuda")[:, None]
        mask = valid[:, None, None, :]  # True = attend
    sets = []
    for _ in range(n):
        qkv = torch.empty(B, S, 3, N, D, dtype=dtype, device="cuda").uniform_(-1, 1)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        sets.append((q, k, v, mask))
    return sets


def nested_sets(bench, shape, dtype, lens):
    """Jagged nested q, k, v [B, N, j, D] over the packed tokens, one per rotated set."""
    torch = bench.torch
    N, D = shape["heads"], shape["head_size"]
    T = sum(lens)
    es = torch.tensor([], dtype=dtype).element_size()
    n = bench.num_sets(4 * T * N * D * es)
    offsets = torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int64, device="cuda")
    sets = []
    for _ in range(n):
        parts = []
        for _i in range(3):
            values = torch.empty(T, N, D, dtype=dtype, device="cuda").uniform_(-1, 1)
            try:  # explicit bounds avoid a device sync to find them (PyTorch >= 2.4)
                nt = torch.nested.nested_tensor_from_jagged(values, offsets, min_seqlen=min(lens),
                                                            max_seqlen=max(lens))
            except TypeError:
                nt = torch.nested.nested_tensor_from_jagged(values, offsets)
            parts.append(nt.transpose(1, 2))
        sets.append((parts[0], parts[1], parts[2], None))
    return sets


NOTES = {
    "none": "q/k/v strided views of packed QKV [B,S,3,N,D], no mask",
    "padded+mask": "padded to S, key-padding mask [B,1,1,S] (all S query rows computed)",
    "nested": "nested jagged q/k/v (T,N,D contiguous, built untimed), varlen",
}


def run_shape(bench, shape, seed, backend_enum):
    torch = bench.torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    name = shape["name"]
    if shape["dtype"] == "int8":
        for b in BACKENDS:
            emit({"name": name, "backend": b, "us": None, "note": "n/a: PyTorch SDPA has no INT8 attention"})
        return
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(shape["dtype"])
    if dtype is None:
        for b in BACKENDS:
            emit({"name": name, "backend": b, "us": None, "note": f"n/a: dtype {shape['dtype']}"})
        return
    lens = lengths_of(shape, seed)
    variants = {"none": ["none"], "lengths": ["padded+mask"], "varlen": ["nested", "padded+mask"]}[shape["mask"]]
    cache = {}

    def sets_for(variant):
        if variant not in cache:
            if variant == "nested":
                cache[variant] = nested_sets(bench, shape, dtype, lens)
            else:
                cache[variant] = padded_sets(bench, shape, dtype, lens, variant == "padded+mask")
        return cache[variant]

    for b in BACKENDS:
        failures = []
        result = None
        for variant in variants:
            try:
                sets = sets_for(variant)

                def make(q, k, v, mask):
                    return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

                calls = [make(*s) for s in sets]
                with sdpa_kernel([backend_enum[b]]):
                    # Unsupported combinations raise here, before timing; PyTorch says why in warnings.
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            calls[0]()
                        except Exception as e:  # noqa: BLE001
                            why = "; ".join(short(w.message) for w in caught[:2])
                            raise RuntimeError(short(e) + (f" ({why})" if why else "")) from e
                    torch.cuda.synchronize()
                    us = bench.time(calls)
                result = {"name": name, "backend": b, "us": round(us, 3),
                          "note": f"{NOTES[variant]}; {len(sets)} sets"
                          + ("" if not failures else "; " + "; ".join(failures))}
                break
            except Exception as e:  # noqa: BLE001 - report and try the next variant
                failures.append(f"{variant} n/a: {short(e)}")
        if result is None:
            result = {"name": name, "backend": b, "us": None, "note": "; ".join(failures)}
        emit(result)
    cache.clear()
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description="PyTorch SDPA baselines for qkv2ctx bench (JSON lines)")
    ap.add_argument("--shapes", default="bench/shapes.csv")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--filter", default="")
    ap.add_argument("--list", action="store_true", help="print each shape's lengths and exit (no PyTorch)")
    args = ap.parse_args()
    try:
        shapes = [s for s in read_shapes(args.shapes) if args.filter in s["name"]]
    except (OSError, ValueError) as e:
        emit({"error": f"shapes: {e}"})
        return 2
    if args.list:
        for s in shapes:
            print(list_line(s, args.seed))
        return 0
    try:
        import torch
        from torch.nn.attention import SDPBackend
    except Exception as e:  # noqa: BLE001
        emit({"error": f"PyTorch is not importable ({short(e)})"})
        return 3
    # PyTorch explains unusable kernels in warnings; the probing call records them into the note,
    # everything else would only clutter the benchmark log.
    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        emit({"error": "PyTorch sees no CUDA device"})
        return 3
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    emit({"info": f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}, "
                  f"{torch.cuda.get_device_name(0)}"})
    backend_enum = {"torch-flash": SDPBackend.FLASH_ATTENTION, "torch-cudnn": SDPBackend.CUDNN_ATTENTION,
                    "torch-efficient": SDPBackend.EFFICIENT_ATTENTION}
    bench = Bench(torch, args.iters, args.warmup)
    for shape in shapes:
        try:
            run_shape(bench, shape, args.seed, backend_enum)
        except Exception as e:  # noqa: BLE001 - one bad shape must not end the run
            for b in BACKENDS:
                emit({"name": shape["name"], "backend": b, "us": None, "note": f"error: {short(e)}"})
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
