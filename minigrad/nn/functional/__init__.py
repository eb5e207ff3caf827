"""minigrad.nn.functional: stateless forms of the layers, activations and losses (PyTorch's names).

One module per family; each lists its public names in `__all__`.
"""
from minigrad.nn.functional.activation import *  # noqa: F401,F403
from minigrad.nn.functional.attention import *  # noqa: F401,F403
from minigrad.nn.functional.batchnorm import *  # noqa: F401,F403
from minigrad.nn.functional.conv import *  # noqa: F401,F403
from minigrad.nn.functional.dropout import *  # noqa: F401,F403
from minigrad.nn.functional.linear import *  # noqa: F401,F403
from minigrad.nn.functional.loss import *  # noqa: F401,F403
from minigrad.nn.functional.normalization import *  # noqa: F401,F403
from minigrad.nn.functional.sparse import *  # noqa: F401,F403
from minigrad.ops import pad  # noqa: F401  (F.pad is minigrad.pad)
