"""tvm-lowrank: compile low-rank CNNs with Apache TVM into fast chains of 1-D convolutions.

Layers point one way: `decompose` (math) <- `nn` (PyTorch) <- `train`; `decompose` <- `passes` <-
`build` <- `tune` / `verify` / `bench`; `cli` only parses and calls the API.
"""

__version__ = "0.1.0"
