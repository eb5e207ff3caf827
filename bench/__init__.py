"""minigrad's benchmark suite: ``python -m bench [--quick] [--json FILE] [CASES...]``.

Every case times minigrad against a reference (NumPy or PyTorch on the CPU) and reports the
ratio ``minigrad time / reference time`` (above 1: minigrad is slower).

Methodology, and why (the machines this runs on are small, shared VMs):

* **One worker process per side.** minigrad, NumPy and PyTorch each run in their own persistent
  subprocess, and the torch worker is the only one that ever imports torch. Two thread pools in
  one process (OpenBLAS's and an OpenMP one such as torch's or Numba's) spin while idle and
  starve each other on two cores: a GEMM that runs at 300 GFLOP/s alone was seen at 0.26.
* **Quiet before each turn.** A pool also spins for a while after its last call (an idle
  OpenBLAS pool burns a core for about 0.1 s here), so before each turn the parent waits
  until the other workers use (almost) no CPU. OMP_WAIT_POLICY=PASSIVE would stop the
  spinning too, but makes torch wake its threads at every call (+60% on a 256x256 matmul).
* **Alternation, A B A B.** The VM has slow spells (1.4x to 20x, lasting seconds). Timing all
  of A and then all of B would put a spell on one side only. The parent instead gives each
  worker a *turn* in alternation: a warm-up (not timed), then a batch of timed repeats, whose
  median is the turn's time.
* **Per-pair ratios.** Turns i of A and B are adjacent in time, so a slow spell hits both or
  neither; their ratio is much steadier than either time. The reported ratio is the median of
  the per-pair ratios, with their spread (interquartile range, and min-max in the JSON).
* **Other processes.** Where Linux reports CPU pressure (/proc/pressure/cpu), a pair during
  whose turns some task kept waiting for a CPU is redone; a row that cannot get enough
  undisturbed pairs is flagged BUSY. Ratios survive a uniformly slow machine, not a
  competing process: it slows a two-thread worker far more than a one-thread one.
* **Canary.** A fixed float32 NumPy GEMM (512x512) is timed in a fresh process before and after
  the run; if the machine was slow at either end, the GFLOP/s show it.
* **Validate before timing.** Each case first compares minigrad's results of two consecutive
  calls (for a training step: the loss and the gradients, after one update) with the
  reference's; a wrong result is reported as FAIL instead of a time.

Other measurements, each a module of its own (``--help`` for options; results in bench/RESULTS.md):

* ``python -m bench.gpt_cpu_tiny``: examples/train_gpt.py's cpu-tiny run end to end against the same
  recipe in PyTorch (torch_gpt.py), same weights and batches, segments alternated;
* ``python -m bench.memory``: peak resident memory of the step cases, per side, in fresh processes;
* ``python -m bench.jit_latency``: the first training steps with Numba's cache cold and warm;
* ``python -m bench.bert_minilm``: the pretrained all-MiniLM-L6-v2 against transformers;
* bench/peak.py: the machine's FLOP/s and copy-bandwidth peaks (run by every ``python -m bench``).
"""
