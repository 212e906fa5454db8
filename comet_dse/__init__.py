"""comet-dse: design-space explorer for fine-grained computation-communication overlap in MoE layers.

This module imports no simulator dependency, so `comet_dse.kernels` works where only
torch, triton and numpy are installed. The simulator is `comet_dse.sim`.
"""

__version__ = "0.1.0"
