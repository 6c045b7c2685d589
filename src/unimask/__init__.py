"""unimask: one system for autoregressive and diffusion language models of code and agents."""

__version__ = "0.1.0"
