"""Running cases: worker processes, alternating turns, per-pair ratios, the table and the JSON.

See the package docstring (bench/__init__.py) for why it is done this way.
"""
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from bench.cases import CASES

REPO = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "MINIGRAD_BACKEND")


@dataclass
class Settings:
    pairs: int      # alternating (minigrad, reference) turn pairs per comparison
    repeats: int    # timed repeats per turn; the turn's time is their median
    warmup: int     # untimed repeats at the start of each turn
    min_s: float    # a repeat loops the step until it lasts at least this long


# A pair is redone when some task waited for a CPU during more than this fraction of a turn
# (another process competing with the worker's threads; Linux PSI, /proc/pressure/cpu). After
# 3 x pairs attempts the row is reported with all its pairs and flagged BUSY.
MAX_STALL = 0.2

FULL = Settings(pairs=9, repeats=5, warmup=1, min_s=0.02)
QUICK = Settings(pairs=3, repeats=3, warmup=1, min_s=0.003)


class WorkerError(RuntimeError):
    pass


class Worker:
    """Parent-side handle of one worker subprocess (``python -m bench.worker``)."""

    def __init__(self, side):
        self.side = side
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        # OMP_WAIT_POLICY is left alone: PASSIVE makes torch wake its threads at every call
        # (measured: +60% on a 256x256 matmul). wait_until_quiet() keeps the spinning of an
        # idle worker out of the other's turn instead.
        if side == "torch":
            # torch does its math with MKL/OpenMP; NumPy's OpenBLAS is only used for setup
            # here, and a second pool in the same process would fight torch's for the cores.
            env["OPENBLAS_NUM_THREADS"] = "1"
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(theirs.fileno()), side],
            pass_fds=[theirs.fileno()], env=env, cwd=REPO, stdout=sys.stderr)
        theirs.close()
        self.conn = Connection(ours.detach())

    def call(self, *msg):
        try:
            self.conn.send(msg)
            status, result = self.conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerError(f"{self.side} worker died (exit code {self.proc.poll()})") from e
        if status != "ok":
            raise WorkerError(result.rstrip().splitlines()[-1] if result.strip() else "error")
        return result

    def close(self):
        try:
            self.conn.send(("quit",))
        except OSError:
            pass
        self.conn.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Workers:
    """One persistent worker per side, started on first use, restarted if it dies."""

    def __init__(self):
        self.live = {}
        self.infos = {}

    def get(self, side):
        w = self.live.get(side)
        if w is None or w.proc.poll() is not None:
            w = self.live[side] = Worker(side)
        return w

    def close(self):
        """Collect each worker's info (at the end: has it loaded torch by now?), then stop it."""
        for side, w in self.live.items():
            try:
                self.infos[side] = w.call("info")
            except WorkerError as e:
                self.infos[side] = {"error": str(e)}
            w.close()
        self.live.clear()


def cpu_seconds(pid):
    """CPU time used so far by all threads of a process (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(workers, window=0.03, cap=1.0):
    """Wait until the workers use less than a third of a core, so that none is spinning.

    A worker's thread pool keeps spinning after its last call: an idle OpenBLAS pool burns a
    core for about 0.1 s (measured here), which slows the next turn of the other worker by
    up to 20x. Without /proc, sleep a fixed 0.2 s instead."""
    pids = [w.proc.pid for w in workers]
    deadline = time.perf_counter() + cap
    before = [cpu_seconds(p) for p in pids]
    if None in before:
        time.sleep(0.2)
        return
    while time.perf_counter() < deadline:
        time.sleep(window)
        now = [cpu_seconds(p) or 0.0 for p in pids]
        if sum(now) - sum(before) < window / 3:
            return
        before = now


def cpu_stall_us():
    """Total time (us) that some task waited for a CPU, from Linux PSI, or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def timed_turn(workers, w, s):
    """One turn of worker w: (median seconds per call, fraction of the turn during which some
    task waited for a CPU, or None where the kernel does not tell)."""
    wait_until_quiet(workers.live.values())
    stall, t0 = cpu_stall_us(), time.perf_counter()
    t = statistics.median(w.call("turn", s.warmup, s.repeats))
    wall = time.perf_counter() - t0
    return t, None if stall is None else (cpu_stall_us() - stall) / 1e6 / wall


def canary(n=512, repeats=20):
    """GFLOP/s of an n x n float32 NumPy GEMM, in a fresh process of its own."""
    w = Worker("numpy")
    try:
        return w.call("canary", n, repeats)
    finally:
        w.close()


def rel_err(got, ref):
    """Largest normwise relative error over the (possibly nested) outputs; inf on a shape
    mismatch."""
    if isinstance(ref, tuple) or isinstance(got, tuple):
        if not (isinstance(ref, tuple) and isinstance(got, tuple)) or len(got) != len(ref):
            return float("inf")
        return max((rel_err(g, r) for g, r in zip(got, ref)), default=0.0)
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    err = np.max(np.abs(got - ref))
    return float(err / max(np.max(np.abs(ref)), 1e-30))


def quantile(xs, q):
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def throughput(case, params, t_mg, t_ref, peaks):
    """The case's work per second on each side, and minigrad's as a fraction of the machine's peak
    for that unit (None where the case declares no work)."""
    if case.work is None:
        return None
    unit, amount = case.work
    work = amount(**params)
    peak = (peaks or {}).get(unit)
    return {"unit": unit, "minigrad": work / t_mg, "reference": work / t_ref, "peak": peak,
            "fraction_of_peak": peak and work / t_mg / peak}


def compare(workers, case, params, ref, s, peaks=None):
    """Validate, then time minigrad against one reference: returns the result record."""
    rec = {"case": case.name, "size": case.label.format(**params), "params": params, "ref": ref,
           "tol": case.tol, "pairs": s.pairs, "repeats": s.repeats}
    mg, rf = workers.get("minigrad"), workers.get(ref)
    try:
        a = mg.call("prepare", case.name, params, s.min_s)
        b = rf.call("prepare", case.name, params, s.min_s)
    except WorkerError as e:
        return dict(rec, status="ERROR", error=str(e))
    rec["number"] = {"minigrad": a["number"], "reference": b["number"]}
    rec["max_rel_err"] = err = rel_err(a["output"], b["output"])
    if not err <= case.tol:
        return dict(rec, status="FAIL", error=f"max relative error {err:.3g} > tol {case.tol:g}")
    clean, disturbed = [], []  # pairs (t_minigrad, t_reference, stall_mg, stall_ref)
    try:
        while len(clean) < s.pairs and len(clean) + len(disturbed) < 3 * s.pairs:
            pair = [*timed_turn(workers, mg, s), *timed_turn(workers, rf, s)]  # A B A B ...
            if max(pair[1] or 0, pair[3] or 0) > MAX_STALL:
                disturbed.append(pair)  # another process wanted the CPU: redo the pair
                time.sleep(0.5)
            else:
                clean.append(pair)
    except WorkerError as e:
        return dict(rec, status="ERROR", error=str(e))
    busy = len(clean) < s.pairs
    pairs = clean + disturbed if busy else clean
    t_mg, t_ref = [p[0] for p in pairs], [p[2] for p in pairs]
    ratios = [m / r for m, r in zip(t_mg, t_ref)]
    rec["throughput"] = throughput(case, params, statistics.median(t_mg), statistics.median(t_ref), peaks)
    return dict(rec, status="ok", minigrad_s=statistics.median(t_mg),
                reference_s=statistics.median(t_ref), ratio=statistics.median(ratios),
                iqr=[quantile(ratios, 0.25), quantile(ratios, 0.75)],
                min_max=[min(ratios), max(ratios)], ratios=ratios,
                minigrad_turns_s=t_mg, reference_turns_s=t_ref,
                cpu_stall=[[p[1], p[3]] for p in pairs], pairs_redone=len(disturbed),
                redone_cpu_stall=[[p[1], p[3]] for p in disturbed], busy=busy)


def fmt_time(t):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


COLUMNS = (("case", 13), ("size", 18), ("ref", 6), ("minigrad", 10), ("reference", 10),
           ("ratio", 7), ("spread (IQR)", 13), ("pairs x reps", 12))


def table_header():
    line = " ".join(f"{name:<{w}}" for name, w in COLUMNS)
    return line + "\n" + "-" * len(line)


def table_row(r):
    cells = [r["case"], r["size"], r["ref"]]
    if r["status"] != "ok":
        return " ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS)) + \
            f" {r['status']}: {r['error']}"
    cells += [fmt_time(r["minigrad_s"]), fmt_time(r["reference_s"]), f"{r['ratio']:.2f}x",
              f"{r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}", f"{r['pairs']}x{r['repeats']}"]
    note = ("  BUSY: threads kept waiting for a CPU (other processes?), unreliable"
            if r["busy"] else
            f"  (redone: {r['pairs_redone']} disturbed pair(s))" if r["pairs_redone"] else "")
    line = " ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS)).rstrip() + note
    tp = r.get("throughput")
    if tp:
        line += (f"\n{'':<13} {tp['minigrad']:.3g} {tp['unit']} vs {tp['reference']:.3g} ({r['ref']})" +
                 (f", minigrad at {tp['fraction_of_peak']:.0%} of peak ({tp['peak']:.3g} {tp['unit']})"
                  if tp["peak"] else ""))
    return line


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                                  text=True).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "HEAD") or None
    if commit and git("status", "--porcelain", "--", "minigrad"):
        commit += "+uncommitted changes in minigrad/"
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": version("numpy"),
            "torch": version("torch"), "git_commit": commit,
            "thread_env": {k: os.environ.get(k) for k in THREAD_VARS}}


def peak_summary(p):
    """The peaks of bench/peak.py in two lines."""
    c = p["flops_computed"]
    computed = (f"{c['gflops']:.0f} GFLOP/s computed ({c['lanes_f32']} lanes x {c['fma_units']} FMA units x 2 x "
                f"{c['clock_ghz']:.2f} GHz x {c['cores']} cores)") if c["gflops"] else "no computed peak"
    measured = f"{p['gflops_measured']:.0f} GFLOP/s measured (FMA loop)" if p["gflops_measured"] else \
        "no measured peak (minigrad._C is not built)"
    return f"peak float32: {measured}; {computed}\npeak memory: {p['copy_gbs']:.1f} GB/s (copy, read + write)"


def torch_available():
    return importlib.util.find_spec("torch") is not None  # finds it without importing it


def run(names, s, quick, log=print):
    """Run the selected cases; returns the report (everything --json writes)."""
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python -m bench"] + sys.argv[1:]), "quick": quick,
              "settings": vars(s), "machine": machine_info(), "results": []}
    refs_skipped = set() if torch_available() else {"torch"}
    if refs_skipped:
        log("note: torch is not installed; skipping the torch references")
    report["canary_gflops"] = {"before": canary()}
    log(f"canary before: {report['canary_gflops']['before']:.1f} GFLOP/s "
        "(512x512 float32 NumPy GEMM)\n")
    log("ratio = minigrad time / reference time (above 1: minigrad slower); times are medians "
        "of turn medians\n")
    workers = Workers()
    peaks = None
    if any(CASES[name].work for name in names):
        report["peaks"] = workers.get("minigrad").call("peaks")
        peaks = {"GFLOP/s": report["peaks"]["gflops_measured"], "GB/s": report["peaks"]["copy_gbs"]}
        log(peak_summary(report["peaks"]) + "\n")
    log(table_header())
    try:
        for name in names:
            case = CASES[name]
            for params in case.quick if quick else case.sizes:
                for ref in case.refs:
                    if ref in refs_skipped:
                        continue
                    rec = compare(workers, case, params, ref, s, peaks)
                    report["results"].append(rec)
                    log(table_row(rec))
    finally:
        workers.close()
    report["workers"] = workers.infos
    for side, info in workers.infos.items():
        if side != "torch" and info.get("torch_loaded"):
            log(f"warning: the {side} worker has torch loaded; its timings may be skewed")
    before = report["canary_gflops"]["before"]
    after = report["canary_gflops"]["after"] = canary()
    log(f"\ncanary after: {after:.1f} GFLOP/s (before: {before:.1f})")
    if max(before, after) > 1.3 * min(before, after):
        log("warning: the canary moved by more than 30%: the machine was slow at one end")
    return report
