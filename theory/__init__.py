"""DSD sample-complexity theory: distribution, CNN/LCN/FCN models, JIT gradient descent, sweeps."""
