"""Model-independent evaluation in NumPy/SciPy: metrics, reconstruction baselines, subject
fingerprinting, the homologous-pair test, matrix plots and cross-validation aggregation.

Modules: metrics, reconstruction, fingerprint, homology, plots, cv (import the one you need).
"""
