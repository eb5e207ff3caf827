"""The layer library, one module per family; each lists its public names in `__all__`."""
from minigrad.nn.layers.activation import *  # noqa: F401,F403
from minigrad.nn.layers.attention import *  # noqa: F401,F403
from minigrad.nn.layers.batchnorm import *  # noqa: F401,F403
from minigrad.nn.layers.conv import *  # noqa: F401,F403
from minigrad.nn.layers.dropout import *  # noqa: F401,F403
from minigrad.nn.layers.embedding import *  # noqa: F401,F403
from minigrad.nn.layers.linear import *  # noqa: F401,F403
from minigrad.nn.layers.loss import *  # noqa: F401,F403
from minigrad.nn.layers.normalization import *  # noqa: F401,F403
from minigrad.nn.layers.pooling import *  # noqa: F401,F403
from minigrad.nn.layers.rnn import *  # noqa: F401,F403
from minigrad.nn.layers.transformer import *  # noqa: F401,F403
