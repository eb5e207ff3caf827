"""GPU benchmarks: minigrad's CUDA kernels against cuBLAS (CuPy), PyTorch and the copy bandwidth.

    python -m bench.gpu                       # every case, full sizes (a few minutes on an H100)
    python -m bench.gpu --quick gemm_*        # small sizes, the GEMM cases only
    python -m bench.gpu --list
    python -m bench.gpu --json bench/out/gpu.json

Needs a GPU, CuPy (minigrad[cuda]) and a CUDA build of torch; the bfloat16 cases need ml_dtypes (the
float16 ones run without it). Exits with status 2, saying what is missing, otherwise.

What is measured (the issue's list), each case against references on the same GPU in the same process:
  gemm_fp32      C = A B, n x n float32: minigrad (kernels/gemm.cu) vs cuBLAS (cupy.matmul) and torch.matmul
                 (TF32 off on both: a float32 GEMM, not a TF32 one), GFLOP/s = 2 n^3 / t
  gemm_fp16, gemm_bf16
                 16-bit operands, float32 accumulation: minigrad (kernels/gemm_tc.cu, mma.sync) vs cuBLAS
                 (cupy.matmul in float16; torch.matmul for both formats)
  softmax, layernorm, bias_gelu
                 memory-bound rows: GB/s = bytes read + written / t, against torch and against the device's
                 copy bandwidth (a device-to-device copy of the same bytes, CuPy)
  attention      causal SDPA forward + backward: minigrad (kernels/attention.cu) vs
                 torch.nn.functional.scaled_dot_product_attention
  gpt_step       nanoGPT's "baby" config (6 layers, 6 heads, d = 384, block 256, batch 64), forward, backward
                 and AdamW: tokens/s, minigrad vs PyTorch eager (bench/torch_gpt.py, same initial weights)

Method: each case validates first (minigrad's result against the reference's, normwise relative error
under the case's tolerance; a failure is reported instead of a time), then warms up (NVRTC compilation and
cuBLAS heuristics excluded), then times `repeats` batches of `iters` calls between two device
synchronizations and reports the median batch. Ratios are minigrad time / reference time (above 1:
minigrad is slower), as in the CPU suite.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Settings:
    sizes: str = "full"  # which of each case's size lists: "full", "quick", or "tiny" (the CI test's)
    repeats: int = 7
    iters: int = 10
    warmup: int = 3


FULL, QUICK = Settings(), Settings("quick", repeats=3, iters=3, warmup=1)
TINY = Settings("tiny", repeats=1, iters=1, warmup=0)  # tests/test_cuda.py: the code paths, on an emulated GPU


@dataclass
class GpuCase:
    name: str
    run: callable  # run(env) -> list of result rows
    doc: str = field(default="")


CASES: dict[str, GpuCase] = {}


def gpu_case(name):
    def register(run):
        CASES[name] = GpuCase(name, run, (run.__doc__ or "").strip().splitlines()[0])
        return run
    return register


class Env:
    """What a run needs: the array module of minigrad's GPU (`cp`: cupy, the cuBLAS and copy references),
    torch and the device of its side (`td`: 'cuda'), minigrad on 'cuda', a synchronizing timer. The CI test
    passes the emulated runtime's module and torch_device='cpu' (tiny sizes: the code paths, not speed)."""

    def __init__(self, settings: Settings, cp=None, torch_device: str = "cuda"):
        import torch

        import minigrad as mg
        if cp is None:
            import cupy as cp
        self.cp, self.torch, self.mg, self.settings, self.td = cp, torch, mg, settings, torch_device
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 GEMMs stay float32 on both sides
        torch.backends.cudnn.allow_tf32 = False

    def sizes(self, **by_mode):
        return by_mode[self.settings.sizes]

    def sync(self):
        self.mg.cuda.synchronize()
        if self.td == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn) -> float:
        """Median seconds per call of fn over `repeats` batches of `iters` calls, after warming up."""
        s = self.settings
        for _ in range(s.warmup):
            fn()
        self.sync()
        batches = []
        for _ in range(s.repeats):
            start = time.perf_counter()
            for _ in range(s.iters):
                fn()
            self.sync()
            batches.append((time.perf_counter() - start) / s.iters)
        return statistics.median(batches)

    def copy_bandwidth(self, nbytes: int) -> float:
        """GB/s of a device-to-device copy of nbytes (read + written: 2 nbytes per copy)."""
        src = self.cp.empty(nbytes // 4, dtype=np.float32)
        dst = self.cp.empty_like(src)
        return 2 * nbytes / self.time(lambda: dst.__setitem__(Ellipsis, src)) / 1e9


def rel_error(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def row(case, size, unit, minigrad_value, refs, error, tol, extra=None):
    """One result: minigrad's throughput and each reference's, their ratio (minigrad time / reference time)."""
    status = "ok" if error <= tol else f"FAIL (relative error {error:.2e} > {tol:.0e})"
    return {"case": case, "size": size, "unit": unit, "minigrad": minigrad_value, "refs": refs,
            "ratios": {k: v / minigrad_value for k, v in refs.items()}, "error": error, "status": status,
            **(extra or {})}


# ---- GEMM -------------------------------------------------------------------------------------------------


def _gemm(env, fmt):
    mg, cp, torch = env.mg, env.cp, env.torch
    sizes = env.sizes(full=[1024, 2048, 4096, 8192], quick=[1024, 2048], tiny=[70])
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
        mg_dtype, torch_dtype = {"fp32": (mg.float32, torch.float32), "fp16": (mg.float16, torch.float16),
                                 "bf16": (mg.bfloat16, torch.bfloat16)}[fmt]
        ma, mb = mg.tensor(a, device="cuda").to(mg_dtype), mg.tensor(b, device="cuda").to(mg_dtype)
        ta, tb = (torch.from_numpy(x).to(env.td).to(torch_dtype) for x in (a, b))
        with mg.no_grad():
            got = (ma @ mb).float().cpu().numpy()
        ref = (ta.float() @ tb.float()).cpu().numpy()  # the exact products of the rounded inputs, in float32
        flops = 2 * n ** 3
        refs = {"torch": flops / env.time(lambda: ta @ tb) / 1e9}
        if fmt != "bf16":  # CuPy's float16 / float32 matmul is cuBLAS (bfloat16 arrays need ml_dtypes in CuPy)
            ca, cb = cp.asarray(ta.cpu().numpy()), cp.asarray(tb.cpu().numpy())
            refs["cuBLAS"] = flops / env.time(lambda: cp.matmul(ca, cb)) / 1e9
        with mg.no_grad():
            ours = flops / env.time(lambda: ma @ mb) / 1e9
        rows.append(row(f"gemm_{fmt}", f"n={n}", "GFLOP/s", ours, refs, rel_error(got, ref),
                        {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1e-2}[fmt]))
    return rows


@gpu_case("gemm_fp32")
def gemm_fp32(env):
    """float32 GEMM (kernels/gemm.cu) vs cuBLAS and torch, n = 1024 .. 8192."""
    return _gemm(env, "fp32")


@gpu_case("gemm_fp16")
def gemm_fp16(env):
    """float16 GEMM on tensor cores (kernels/gemm_tc.cu) vs cuBLAS and torch."""
    return _gemm(env, "fp16")


@gpu_case("gemm_bf16")
def gemm_bf16(env):
    """bfloat16 GEMM on tensor cores (kernels/gemm_tc.cu) vs torch (cuBLAS); needs ml_dtypes."""
    return _gemm(env, "bf16")


# ---- memory-bound rows ----------------------------------------------------------------------------------


def _rows_case(env, name, shapes, minigrad_fn, torch_fn, bytes_moved):
    mg, torch = env.mg, env.torch
    rows = []
    for r, d in shapes:
        x = np.random.default_rng(d).standard_normal((r, d), np.float32) * 3
        mx, tx = mg.tensor(x, device="cuda"), torch.from_numpy(x).to(env.td)
        with mg.no_grad(), torch.no_grad():
            got, ref = minigrad_fn(mg, mx).cpu().numpy(), torch_fn(torch, tx, env.td).cpu().numpy()
            nbytes = bytes_moved(r, d)
            ours = nbytes / env.time(lambda: minigrad_fn(mg, mx)) / 1e9
            refs = {"torch": nbytes / env.time(lambda: torch_fn(torch, tx, env.td)) / 1e9,
                    "copy": env.copy_bandwidth(nbytes)}
        rows.append(row(name, f"{r}x{d}", "GB/s", ours, refs, rel_error(got, ref), 1e-5))
    return rows


ROW_SHAPES = dict(full=[(8192, 256), (4096, 1024), (2048, 4096), (256, 50304)], quick=[(4096, 1024)],
                  tiny=[(5, 33), (3, 1100)])


@gpu_case("softmax")
def softmax(env):
    """softmax over the last dim (kernels/softmax.cu, warp or block per row) vs torch and the copy."""
    return _rows_case(env, "softmax", env.sizes(**ROW_SHAPES), lambda mg, x: x.softmax(-1),
                      lambda torch, x, td: torch.softmax(x, -1), lambda r, d: 2 * 4 * r * d)


@gpu_case("layernorm")
def layernorm(env):
    """LayerNorm forward (kernels/layernorm.cu) vs torch and the copy; weight and bias of ones and zeros."""
    def ours(mg, x):
        d = x.shape[-1]
        return mg.nn.functional.layer_norm(x, (d,), mg.ones(d, device="cuda"), mg.zeros(d, device="cuda"))

    def theirs(torch, x, td):
        d = x.shape[-1]
        return torch.nn.functional.layer_norm(x, (d,), torch.ones(d, device=td), torch.zeros(d, device=td))
    return _rows_case(env, "layernorm", env.sizes(**ROW_SHAPES), ours, theirs, lambda r, d: 2 * 4 * r * d)


@gpu_case("bias_gelu")
def bias_gelu(env):
    """gelu(x + bias) fused (kernels/elementwise.cu) vs torch eager (two kernels) and the copy."""
    def ours(mg, x):
        return mg.ops.bias_gelu(x, mg.ones(x.shape[-1], device="cuda"), "tanh")

    def theirs(torch, x, td):
        return torch.nn.functional.gelu(x + torch.ones(x.shape[-1], device=td), approximate="tanh")
    return _rows_case(env, "bias_gelu", env.sizes(**ROW_SHAPES)[:3], ours, theirs, lambda r, d: 2 * 4 * r * d)


# ---- attention ---------------------------------------------------------------------------------------------


@gpu_case("attention")
def attention(env):
    """causal attention forward + backward (kernels/attention.cu) vs torch's scaled_dot_product_attention."""
    mg, torch = env.mg, env.torch
    shapes = env.sizes(full=[(64, 6, 256, 64), (16, 12, 1024, 64), (4, 16, 2048, 128)], quick=[(8, 6, 256, 64)],
                       tiny=[(1, 2, 17, 8)])
    rows = []
    for b, h, t, d in shapes:
        rng = np.random.default_rng(t)
        q, k, v, g = (rng.standard_normal((b, h, t, d), np.float32) for _ in range(4))
        mq, mk, mv = (mg.tensor(x, device="cuda", requires_grad=True) for x in (q, k, v))
        tq, tk, tv = (torch.from_numpy(x).to(env.td).requires_grad_() for x in (q, k, v))
        mg_g, t_g = mg.tensor(g, device="cuda"), torch.from_numpy(g).to(env.td)

        def ours():
            out = mg.nn.functional.scaled_dot_product_attention(mq, mk, mv, is_causal=True)
            out.backward(mg_g)
            return out

        def theirs():
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            out.backward(t_g)
            return out
        got, ref = ours().detach().cpu().numpy(), theirs().detach().cpu().numpy()
        error = max(rel_error(got, ref), rel_error(mq.grad.cpu().numpy(), tq.grad.cpu().numpy()))
        flops = 4 * b * h * t * t * d * 3.5 / 2  # causal: half the score matrix; backward ~2.5x forward
        ours_t, theirs_t = env.time(ours), env.time(theirs)
        rows.append(row("attention", f"B{b} H{h} T{t} D{d}", "TFLOP/s", flops / ours_t / 1e12,
                        {"torch_sdpa": flops / theirs_t / 1e12}, error, 1e-4,
                        {"ms": {"minigrad": ours_t * 1e3, "torch_sdpa": theirs_t * 1e3}}))
    return rows



# ---- GPT training step ----------------------------------------------------------------------------------


@gpu_case("gpt_step")
def gpt_step(env):
    """nanoGPT "baby" (6 x 384, 6 heads, block 256, batch 64): forward, backward, AdamW; tokens/s vs torch."""
    from bench.torch_gpt import TorchGPT
    from minigrad.models import GPT, GPTConfig
    mg, torch = env.mg, env.torch
    batch, block, layers, heads, width = env.sizes(full=(64, 256, 6, 6, 384), quick=(8, 256, 6, 6, 384),
                                                  tiny=(2, 8, 1, 2, 16))
    config = GPTConfig(vocab_size=65, block_size=block, n_layer=layers, n_head=heads, n_embd=width, dropout=0.0,
                       bias=False)
    mg.manual_seed(0)
    model = GPT(config)
    tmodel = TorchGPT(config)
    tmodel.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    model.to("cuda")
    tmodel.to(env.td)
    opt = mg.optim.AdamW(model.parameters(), lr=1e-3)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-3)
    data = np.random.default_rng(1).integers(0, 65, (batch, block + 1))
    x, y = mg.tensor(data[:, :-1], device="cuda"), mg.tensor(data[:, 1:], device="cuda")
    tx, ty = torch.from_numpy(data[:, :-1]).to(env.td), torch.from_numpy(data[:, 1:]).to(env.td)

    def ours():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def theirs():
        loss = tmodel(tx, ty)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return loss
    error = abs(ours().item() - theirs().item()) / 4.2  # the first step: same weights, same batch (loss ~ ln 65)
    tokens = batch * block
    ours_t, theirs_t = env.time(ours), env.time(theirs)
    return [row("gpt_step", f"B{batch} T{block} L{layers} d{width}", "tokens/s", tokens / ours_t, {"torch_eager": tokens / theirs_t},
                error, 1e-4)]


# ---- the command ------------------------------------------------------------------------------------------


def run(env: Env, names, log=lambda line: None) -> list[dict]:
    """The result rows of the named cases, each line of the table passed to `log` as it comes."""
    results = []
    for name in names:
        try:
            rows = CASES[name].run(env)
        except Exception as e:  # a case that cannot run here (e.g. bfloat16 without ml_dtypes) is reported
            rows = [{"case": name, "status": f"ERROR {type(e).__name__}: {e}"}]
        for r in rows:
            results.append(r)
            if r["status"] != "ok" or "minigrad" not in r:
                log(f"{r['case']:<11} {r.get('size', ''):<18} {r['status']}")
                continue
            refs = "  ".join(f"{k} {v:,.1f} ({r['ratios'][k]:.2f}x)" for k, v in r["refs"].items())
            log(f"{r['case']:<11} {r['size']:<18} minigrad {r['minigrad']:,.1f} {r['unit']}   vs {refs}")
    return results


def missing_requirements() -> str | None:
    """Why this machine cannot run the GPU benchmarks, or None."""
    import minigrad as mg
    if not mg.cuda.is_available():
        return f"no GPU for minigrad: {mg.cuda.why_unavailable()}"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (the reference side)"
    if not torch.cuda.is_available():
        return "this torch has no CUDA (a CPU build?): the reference side needs a CUDA build"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="*", metavar="CASE", help="case names or glob patterns (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.name:<11} {c.doc}")
        return 0
    names = [n for n in CASES if not args.cases or any(fnmatch.fnmatch(n, pat) for pat in args.cases)]
    if not names:
        p.error(f"no case matches {args.cases}; see --list")
    why = missing_requirements()
    if why is not None:
        print(f"python -m bench.gpu: cannot run: {why}", file=sys.stderr)
        return 2
    env = Env(QUICK if args.quick else FULL)
    import minigrad as mg
    report = {"device": mg.cuda.get_device_name(), "torch": env.torch.__version__, "cupy": env.cp.__version__,
              "settings": vars(env.settings), "results": run(env, names, log=print)}
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 1 if any(r["status"] != "ok" for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
