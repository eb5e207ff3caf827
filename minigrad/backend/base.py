"""The primitive interface: what every backend module may provide, and what each name means.

A backend is a plain module exporting functions under the names below (one flat namespace, as in
needle). `numpy_ref` provides all of them and is the readable reference; accelerated backends (C++,
Numba, CUDA) provide any subset, and the selection in `minigrad.backend` falls back to the reference
for the rest. Differentiable ops in `minigrad.ops` call only these names, never NumPy or CuPy directly.

Conventions (after llm.c):
- arrays in, arrays out; inputs may be non-contiguous views, and a kernel that needs contiguous
  memory makes it so explicitly (`contiguous`);
- `<op>_forward` / `<op>_backward` pairs; backward takes the upstream gradient `dout` first, then what
  forward cached (e.g. the softmax output), then the inputs;
- shapes and dtypes are validated by the ops layer before a primitive is called: primitives may assume
  valid input;
- primitives never upcast silently: float32 in, float32 out; float16 in, float16 out.

16-bit floats (float16, bfloat16; mixed precision, see minigrad.amp). A primitive given float16 or
bfloat16 arrays computes as if on float32 copies of them and rounds each output once to the input's
dtype: what tensor cores do (the product of two 16-bit values is exact in float32, and the sums
accumulate in float32). So `matmul` returns round16(float32(a) @ float32(b)), `sum` of 10,000 bfloat16
ones is 9984 (10,000 rounded), not 256, and softmax, layer_norm, attention, cross_entropy, conv2d, the
pools and the RNN cells never accumulate in 16 bits. Exceptions, by contract:
- the statistics that a forward caches for its backward stay float32: `attention_forward`'s lse and
  `layer_norm_forward`'s mean and rstd (FlashAttention's and PyTorch's choice: rounding lse to bfloat16
  would put an error of up to 2^-9 * |lse| in every recomputed probability);
- elementwise ufuncs (add, mul, exp, ...) round once per element by nature; layout, indexing and
  comparisons do not round at all;
- the in-place optimizer steps update 16-bit arrays in their own dtype (mixed precision keeps parameters
  and their gradients in float32); index_add_ and scatter_add_along_axis add all the contributions to an
  element in float32, in index order, to its float32 value, and round once.
A backend whose kernels lack 16-bit versions sends those arrays to numpy_ref, which implements the
contract (see its `in_float32`).
"""

# The primitives that make an array from Python values, a shape or host memory (and to_host, its inverse):
# no input array tells them which device the result belongs to, so each device's own backend provides
# them, and a backend that runs on another device's arrays as a fallback (numpy_ref on CuPy arrays) never
# does, whatever backend.use() prefers.
DEVICE_BOUND = ("asarray", "from_host", "to_host", "empty", "zeros", "ones", "full", "arange", "linspace", "eye",
                "make_generator")

PRIMITIVES = {
    # ---- creation and conversion ------------------------------------------------------------
    "asarray": "asarray(data, dtype) -> new array holding a copy of `data` (nested lists, scalars, arrays)",
    "from_host": "from_host(ndarray) -> array on this device sharing memory where possible",
    "to_host": "to_host(x) -> numpy.ndarray with the values of x",
    "empty": "empty(shape, dtype) -> uninitialized array",
    "zeros": "zeros(shape, dtype)",
    "ones": "ones(shape, dtype)",
    "full": "full(shape, value, dtype)",
    "arange": "arange(start, stop, step, dtype) -> 1-D array",
    "linspace": "linspace(start, stop, steps, dtype) -> 1-D array of `steps` evenly spaced values",
    "eye": "eye(n, m, dtype) -> (n, m) identity",
    "astype": "astype(x, dtype) -> x converted to `dtype` (a copy)",
    "copy_": "copy_(dst, src) -> None; writes src (broadcast to dst.shape) into dst in place",
    # ---- random numbers (gen comes from make_generator) -------------------------------------
    "make_generator": "make_generator(seed) -> a random generator for this device",
    "rand": "rand(gen, shape, dtype) -> uniform samples in [0, 1)",
    "randn": "randn(gen, shape, dtype) -> standard normal samples",
    "randint": "randint(gen, low, high, shape, dtype) -> integers in [low, high)",
    # ---- elementwise, unary -----------------------------------------------------------------
    "neg": "neg(x)", "abs": "abs(x)", "sign": "sign(x)", "exp": "exp(x)", "log": "log(x)",
    "sqrt": "sqrt(x)", "rsqrt": "rsqrt(x) = 1 / sqrt(x)", "sin": "sin(x)", "cos": "cos(x)",
    "tanh": "tanh(x)", "sigmoid": "sigmoid(x) = 1 / (1 + exp(-x)), computed without overflow",
    "relu": "relu(x) = max(x, 0)",
    "relu_backward": "relu_backward(dout, out) -> dout where out > 0 (or nan), 0 where out <= 0; out = relu(x), "
                     "of dout's shape",
    "gelu_forward": "gelu_forward(x, approximate) -> x * Phi(x); approximate in {'none', 'tanh'}",
    "gelu_backward": "gelu_backward(dout, x, approximate) -> dout * d gelu(x) / dx",
    "clip": "clip(x, lo, hi) -> x clamped to [lo, hi]; lo or hi may be None",
    "logical_not": "logical_not(x) -> bool array",
    # ---- elementwise, binary (NumPy broadcasting) --------------------------------------------
    "add": "add(a, b)", "sub": "sub(a, b)", "mul": "mul(a, b)", "div": "div(a, b) (true division)",
    "pow": "pow(a, b)", "maximum": "maximum(a, b)", "minimum": "minimum(a, b)",
    "eq": "eq(a, b) -> bool", "ne": "ne(a, b) -> bool", "lt": "lt(a, b) -> bool",
    "le": "le(a, b) -> bool", "gt": "gt(a, b) -> bool", "ge": "ge(a, b) -> bool",
    "logical_and": "logical_and(a, b) -> bool", "logical_or": "logical_or(a, b) -> bool",
    "where": "where(cond, a, b) -> a where cond else b",
    # ---- reductions (axis: None, int or tuple of ints) ---------------------------------------
    "sum": "sum(x, axis, keepdims)", "max": "max(x, axis, keepdims)", "min": "min(x, axis, keepdims)",
    "argmax": "argmax(x, axis, keepdims) -> int64 (axis: int or None)",
    "argmin": "argmin(x, axis, keepdims) -> int64 (axis: int or None)",
    "logsumexp": "logsumexp(x, axis, keepdims) -> log(sum(exp(x))) computed as m + log(sum(exp(x - m)))",
    "softmax_forward": "softmax_forward(x, axis) -> exp(x - max) / sum(exp(x - max)); rows of -inf give nan",
    "softmax_backward": "softmax_backward(dout, out, axis) -> out * (dout - sum(dout * out))",
    "log_softmax_forward": "log_softmax_forward(x, axis) -> x - max - log(sum(exp(x - max)))",
    "log_softmax_backward": "log_softmax_backward(dout, out, axis) -> dout - exp(out) * sum(dout)",
    # ---- linear algebra -------------------------------------------------------------------------
    "matmul": "matmul(a, b) -> a @ b with batch broadcasting; operands may be transposed views; 16-bit "
              "operands: products accumulated in float32, the result rounded once to their dtype",
    # ---- layout and indexing -------------------------------------------------------------------
    "reshape": "reshape(x, shape) -> a view when strides allow, else a copy",
    "transpose": "transpose(x, axes) -> a view with permuted axes",
    "broadcast_to": "broadcast_to(x, shape) -> a read-only view",
    "contiguous": "contiguous(x) -> x itself if C-contiguous, else a C-contiguous copy",
    "getitem": "getitem(x, index) -> x[index] (basic index -> view, advanced index -> copy)",
    "index_add_": "index_add_(out, index, values) -> None; out[index] += values in place, accumulating "
                  "repeated indices",
    "setitem_": "setitem_(x, index, values) -> None; x[index] = values in place",
    "concatenate": "concatenate(arrays, axis)",
    "pad": "pad(x, pad_width, value) -> x padded with a constant; pad_width as in numpy.pad",
    "tril": "tril(x, k) -> lower triangle of the last two dims", "triu": "triu(x, k)",
    "take_along_axis": "take_along_axis(x, index, axis) -> gathered values (torch.gather)",
    "scatter_add_along_axis": "scatter_add_along_axis(shape, index, values, axis, dtype) -> zeros(shape)"
                              " with values added along axis at index (gather's backward)",
    "tile": "tile(x, reps) -> x repeated reps[i] times along dim i (torch.repeat)",
    "nonzero": "nonzero(x) -> tuple of int64 index arrays, one per dim",
    "isfinite": "isfinite(x) -> bool", "any": "any(x) -> Python bool", "all": "all(x) -> Python bool",
    # ---- neural-network kernels (shapes: N batch, C channels, H/W spatial, T time, D features) ---------
    "conv2d_forward": "conv2d_forward(x (N,C,H,W), weight (O,C/groups,kh,kw), stride (sh,sw), padding "
                      "((top,bottom),(left,right)), dilation (dh,dw), groups, bias=None) -> out (N,O,Ho,Wo), plus "
                      "bias (O,) per output channel when given",
    "conv2d_backward": "conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs=(True, True)) -> "
                       "(dx, dweight), each None where `needs` (need dx, need dweight) says it is not wanted",
    "max_pool2d_forward": "max_pool2d_forward(x (N,C,H,W), kernel (kh,kw), stride, padding (ph,pw), dilation, "
                          "ceil_mode) -> (out, argmax): argmax holds each max's flat index into H*W",
    "max_pool2d_backward": "max_pool2d_backward(dout, argmax, input_shape) -> dx (scatter-add to the argmax)",
    "avg_pool2d_forward": "avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad) -> out",
    "avg_pool2d_backward": "avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, "
                           "count_include_pad) -> dx",
    "layer_norm_forward": "layer_norm_forward(x (R,D), weight (D,) or None, bias (D,) or None, eps) -> "
                          "(out (R,D), mean (R,), rstd (R,)): normalization over the last dim; mean and rstd "
                          "are float32 for 16-bit x",
    "layer_norm_backward": "layer_norm_backward(dout, x, weight, mean, rstd) -> (dx, dweight, dbias); "
                           "dweight/dbias are None when weight/bias are",
    "embedding_forward": "embedding_forward(weight (V,D), indices int64 (*)) -> out (*, D)",
    "embedding_backward": "embedding_backward(dout (*, D), indices (*), num_embeddings, padding_idx) -> "
                          "dweight (V,D): scatter-add, repeated indices accumulate, padding_idx row stays 0",
    "dropout_forward": "dropout_forward(gen, x, p) -> (out, mask): mask = bool keep-mask (rand >= p), "
                       "out = x * mask / (1 - p)",
    "dropout_backward": "dropout_backward(dout, mask, p) -> dout * mask / (1 - p)",
    # ---- fused elementwise (R rows, D features; bias broadcast over the rows) ------------------------
    "bias_gelu_forward": "bias_gelu_forward(x (R,D), bias (D,) or None, approximate) -> gelu(x + bias) (R,D)",
    "bias_gelu_backward": "bias_gelu_backward(dout, x, bias, approximate) -> (dx (R,D), dbias (D,) or None): "
                          "dx = dout * gelu'(x + bias), dbias = dx summed over the rows (None without a bias)",
    "bias_residual_forward": "bias_residual_forward(x (R,D), bias (D,), residual (R,D)) -> (x + bias) + residual; "
                             "its backward is dout for x and residual, and the `sum` of dout over the rows for bias",
    # ---- optimizer steps: update param and the state arrays in place, return None -------------------
    "sgd_step_": "sgd_step_(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, maximize, "
                 "first_step): minigrad.optim.SGD's step; momentum_buf is None when momentum == 0, and is "
                 "overwritten with the (decayed) gradient on the first step",
    "adam_step_": "adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, "
                  "weight_decay, decoupled, amsgrad, maximize): minigrad.optim.Adam's step t = `step` (>= 1); "
                  "decoupled: AdamW's weight decay; max_exp_avg_sq is None unless amsgrad",
    "sgd_foreach_": "sgd_foreach_(params, grads, momentum_bufs, lr, momentum, dampening, weight_decay, nesterov, "
                    "maximize, first_steps): sgd_step_ on every tensor of the lists (a param group's, in one "
                    "call); momentum_bufs is a list, or None when momentum == 0; first_steps a bool per tensor",
    "adam_foreach_": "adam_foreach_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, "
                     "eps, weight_decay, decoupled, amsgrad, maximize): adam_step_ on every tensor of the lists; "
                     "steps holds each tensor's step count t (>= 1); max_exp_avg_sqs is None unless amsgrad",
    "cross_entropy_forward": "cross_entropy_forward(logits (N,C), targets int64 (N,), ignore_index, "
                             "label_smoothing) -> (losses (N,), logprobs (N,C)); ignored rows have loss 0",
    "cross_entropy_backward": "cross_entropy_backward(dlosses (N,), logprobs, targets, ignore_index, "
                              "label_smoothing) -> dlogits (N,C)",
    "attention_forward": "attention_forward(q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,Dv), bias, is_causal, scale) "
                         "-> (out (B,H,Tq,Dv), lse (B,H,Tq)): softmax(q k^T * scale + bias) v; bias is an "
                         "additive float mask broadcastable to (B,H,Tq,Tk) or None; is_causal masks key j > "
                         "query i (top-left aligned, as torch); lse = logsumexp of each score row. 16-bit "
                         "q, k, v: computed in float32, out rounded to their dtype, lse float32",
    "attention_backward": "attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale) -> (dq, dk, dv)",
    # ---- recurrent cells: the gate math of one step (the recurrent matmul h W_hh^T stays on `matmul`) -----
    "lstm_cell_forward": "lstm_cell_forward(gates_x (B,4H), gates_h (B,4H), c (B,H)) -> (hc (2,B,H), cache "
                         "(B,5H)): gates = gates_x + gates_h in PyTorch's order i, f, g, o; c' = sigmoid(f) c + "
                         "sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'); hc[0] = h', hc[1] = c'; cache holds the "
                         "four activated gates and tanh(c')",
    "lstm_cell_backward": "lstm_cell_backward(dh' (B,H), dc' (B,H), cache, c) -> (dgates (B,4H), dc (B,H)): "
                          "dgates is the gradient of gates_x and of gates_h alike",
    "gru_cell_forward": "gru_cell_forward(gates_x (B,3H), gates_h (B,3H), h (B,H)) -> (h' (B,H), cache (B,4H)): "
                        "order r, z, n; r, z = sigmoid(gates_x + gates_h), n = tanh(gates_x_n + r * gates_h_n), "
                        "h' = (1 - z) n + z h; cache holds r, z, n and gates_h_n",
    "gru_cell_backward": "gru_cell_backward(dh' (B,H), cache, h) -> (dgates_x (B,3H), dgates_h (B,3H), dh (B,H))",
    # ---- recurrent layers: one layer, one direction, over a whole sequence (T steps, run T-1 .. 0 if reverse) ----
    "lstm_scan_forward": "lstm_scan_forward(gates_x (T,B,4H), bias (4H,) or None, h0 (B,H), c0 (B,H), w_hh (4H,H), "
                         "reverse) -> (out (T+1,B,H), cache (T,B,6H)): per step t the LSTM cell on gates_x[t] + bias "
                         "and h W_hh^T, h and c the state the previous step run left (h0, c0 first); out[t] = h_t, "
                         "out[T] = the last c; cache[t] = i, f, g, o, tanh(c_t), c_t",
    "lstm_scan_backward": "lstm_scan_backward(grad (T+1,B,H), cache, out, h0, c0, w_hh, reverse) -> (dgates (T,B,4H), "
                          "dh0 (B,H), dc0 (B,H), dw_hh (4H,H), dbias (4H,)): dgates is the gradient of gates_x, "
                          "dbias = dgates summed over T and B (the gradient of bias, when one was given)",
    "gru_scan_forward": "gru_scan_forward(gates_x (T,B,3H), bias (3H,) or None, h0 (B,H), w_hh (3H,H), b_hh (3H,), "
                        "reverse) -> (out (T,B,H), cache (T,B,4H)): per step t the GRU cell on gates_x[t] + bias and "
                        "h W_hh^T + b_hh; out[t] = h_t; cache[t] = the cell's cache",
    "gru_scan_backward": "gru_scan_backward(grad (T,B,H), cache, out, h0, w_hh, reverse) -> (dgates_x (T,B,3H), "
                         "dh0 (B,H), dw_hh (3H,H), db_hh (3H,), dbias (3H,)): dbias = dgates_x summed over T and B",
}


def missing_primitives(module) -> list[str]:
    """Names of the interface a backend module does not provide (the reference must provide all)."""
    return sorted(name for name in PRIMITIVES if not callable(getattr(module, name, None)))