"""lorakit: LoRA/DoRA fine-tuning of speech recognition models, driven by parameterized notebooks."""

__version__ = "0.1.0"
