"""minigrad.nn: Module and Parameter, the layer library, functional forms, init, utilities."""
from minigrad.nn import functional, init, utils  # noqa: F401
from minigrad.nn.containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from minigrad.nn.layers import *  # noqa: F401,F403
from minigrad.nn.module import IncompatibleKeys, Module  # noqa: F401
from minigrad.nn.parameter import Parameter  # noqa: F401
