"""lorakit: LoRA/DoRA fine-tuning of speech recognition models, driven by parameterized notebooks."""

__version__ = "0.1.0"

from .config import ConfigError, RunConfig  # noqa: E402  (light: no torch import)


def __getattr__(name: str):
    # heavy modules (torch, transformers) load only when a notebook asks for them
    if name == "run":
        from .experiment.train import run

        return run
    if name == "plot_run_curves":
        from .analysis.plots import plot_run_curves

        return plot_run_curves
    if name == "transcribe":
        from .deploy.transcribe import transcribe

        return transcribe
    raise AttributeError(name)


__all__ = ["ConfigError", "RunConfig", "run", "plot_run_curves", "transcribe"]
