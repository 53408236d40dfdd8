"""Models and training: the base policy, the PPM, the text engines and the training loops.

``base`` (the packaged SmolLM2, a tiny random model, the one loader), ``ppm`` (the value head
and its pairwise loss), ``engines`` (vLLM, transformers, OpenAI-compatible servers) and
``train`` (policy SFT and PPM training). The stable public path of ``PPM`` is ``pipeline.ppm``.
"""
