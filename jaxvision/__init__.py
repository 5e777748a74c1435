"""jaxvision: video recognition (AdaFocusV2) on the shared engine; backbones in ``models``."""
