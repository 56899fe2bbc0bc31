"""`lorakit` command line: run / sweep / search / matrix / archive / unarchive / analysis / demo-data /
real-speech / import-model / transcribe / export.

The composition root: the one module that knows every side of the package. Each command parses its
arguments and calls one entry point of one side (launch, analysis, experiment, demo); the sides never
import this module. Entry points are imported inside each command, so `lorakit matrix` does not pay
for torch and `lorakit run` does not pay for matplotlib.

`lorakit run params/<name>.yaml` is exactly a papermill execution of notebooks/train.ipynb with the
recipe's values as parameters, into executed/<name>/run.ipynb.

Conventions: a user's mistake is one line on stderr (`lorakit <command>: ...`) and exit code 2, never a
traceback; counts (`--jobs`, `--trials`, `--batch-size`) are integers >= 1; `--jobs` and `--ray` exclude
each other; `--runs` resolves like every path the kit takes (`env.project_path`: relative to the
project root).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any, NoReturn

from .config import ConfigError, RunConfig
from .params import load_yaml
from .demo.options import demo_data_arguments, demo_data_settings, real_speech_arguments
from .env import project_path


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line naming the command and where its help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def user_error(command: str, exc: Exception) -> int:
    """A user's mistake as the CLI reports it: one line `lorakit <command>: <what>` on stderr; exit code 2."""
    print(f"lorakit {command}: {exc}", file=sys.stderr)
    return 2


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip reports it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lorakit")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "(not installed)"


def count(text: str) -> int:
    """An argparse type: an integer >= 1 (jobs, trials, clips per batch)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n


def parse_value(text: str) -> Any:
    """`-p key value` like papermill: Python/YAML literals become numbers and booleans, else a string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    else:  # "1.0,0.5" is a tuple to Python; a list is what papermill can inject into the notebook
        return list(value) if isinstance(value, tuple) else value
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def recipe_parameters(recipe: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    values = dict(load_yaml(recipe)) if recipe else {}
    values.update(overrides)
    RunConfig.from_dict(values, source=str(recipe or "overrides"))  # fail here, before any kernel starts
    return values


def _overrides(pairs: list[list[str]] | None) -> dict[str, Any]:
    return {k: parse_value(v) for k, v in (pairs or [])}


def _variant_id(stem: str, overrides: dict[str, Any]) -> str:
    """demo + {lr: 5e-05, adapter_scales: [1.0, 0.5]} -> demo-lr5e-05-adapter_scales1.0_0.5 (a valid run id)."""
    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    raw = stem + "".join(f"-{k}{text(v)}" for k, v in overrides.items())
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def cmd_run(args: argparse.Namespace) -> int:
    overrides = _overrides(args.p)
    params = recipe_parameters(args.recipe, overrides)
    # the run id is the recipe's name; -p overrides make it e.g. demo-lr5e-05, so a variant never
    # collides with (or is skipped as) the plain recipe
    run_id = params.pop("run_id", "") or _variant_id(Path(args.recipe).stem, overrides)
    from .launch.notebooks import execute

    status = execute(params, run_id, force=args.force, quiet=args.quiet)
    return 0 if status in ("finished", "skipped") else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from .launch.sweep import run_sweep

    return run_sweep(args.sweep, jobs=args.jobs, ray_address=args.ray, force=args.force, analysis=not args.no_analysis)


def cmd_search(args: argparse.Namespace) -> int:
    from .launch.search import load_search, run_search

    code = run_search(args.search, trials=args.trials, jobs=args.jobs, storage=args.storage, analysis=not args.no_analysis,
                      ray_address=args.ray)
    from .analysis.study_report import open_study, study_markdown

    search = load_search(args.search)
    print(study_markdown(open_study(args.storage or search.default_storage(), search.name)))
    return code


def runs_folder(runs: str) -> Path:
    """`--runs`: an existing folder, relative to the project root unless absolute."""
    folder = project_path(runs)
    if not folder.is_dir():
        raise ConfigError(f"--runs {runs}: no folder {folder}")
    return folder


def cmd_matrix(args: argparse.Namespace) -> int:
    from .analysis.matrix import write_matrix

    paths = write_matrix(runs_folder(args.runs))
    for p in paths:
        print(p)
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from .analysis.archive import archive_run

    try:
        archive_run(runs_folder(args.runs) / args.run_id, args.reason)
    except (ValueError, FileNotFoundError) as exc:
        return user_error("archive", exc)
    print(f"archived {args.run_id}: {args.reason.strip()}")
    return 0


def cmd_unarchive(args: argparse.Namespace) -> int:
    from .analysis.archive import unarchive_run

    try:
        unarchive_run(runs_folder(args.runs) / args.run_id)
    except FileNotFoundError as exc:
        return user_error("unarchive", exc)
    print(f"unarchived {args.run_id}: back in the matrix")
    return 0


def cmd_analysis(args: argparse.Namespace) -> int:
    """The analysis notebook beside the runs it reads (<runs>/analysis.ipynb); the figures of any folder
    but the project's executed/ go beside them too (<runs>/figures/), so they never replace the demo's."""
    from .launch.notebooks import execute_analysis

    runs = runs_folder(args.runs)
    params: dict[str, Any] = {"runs_dir": str(runs)}
    if runs.resolve() != project_path("executed").resolve():
        params["figures_dir"] = str(runs / "figures")
    return 0 if execute_analysis(runs / "analysis.ipynb", params) else 1


def cmd_demo_data(args: argparse.Namespace) -> int:
    """The English demo corpus (data/demo), or with `--language fr` the French domain-only scenario (data/demo_fr)."""
    try:
        demo_data_settings(args)  # a size option of the other scenario: refused before the audio libraries load
    except ValueError as exc:
        print(f"lorakit demo-data: {exc}", file=sys.stderr)
        return 2
    from .demo import corpus, corpus_fr

    return (corpus_fr if args.language == "fr" else corpus).build(args)


def cmd_real_speech(args: argparse.Namespace) -> int:
    from .demo import real_speech

    return real_speech.build(args)


def cmd_import_model(args: argparse.Namespace) -> int:
    from .experiment.convert_ct2_whisper import BUNDLED_NAME, bundled_model_dir, bundled_spec, convert

    if args.src and bundled_spec(args.src) is None:
        src = Path(args.src)
        if not (src / "model.bin").is_file():  # checked before the conversion's bar starts
            print(f"lorakit import-model: {src}: not a bundled name nor a CTranslate2 Whisper export folder (no model.bin)",
                  file=sys.stderr)
            return 2
        print(convert(src, args.dst or src.with_name(src.name + "-hf")))
    else:
        print(bundled_model_dir(args.src or BUNDLED_NAME, force=args.force))
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .deploy.transcribe import TranscribeError, transcribe

    try:
        res = transcribe(model=args.model, adapter=args.adapter, inputs=args.inputs, output=args.output or None, fmt=args.format,
                         batch_size=args.batch_size, device=args.device, runs_dir=args.runs and project_path(args.runs))
    except (TranscribeError, FileNotFoundError) as exc:
        return user_error("transcribe", exc)
    if not args.output:  # no file: the hypotheses go to stdout, one per line
        for row in res.rows:
            print(f"{row['input']}\t{row['hyp']}")
    else:
        print(f"wrote {len(res.rows)} hypotheses to {args.output}", file=sys.stderr)
    if res.summary:
        s = res.summary
        print(f"WER {s['wer'] * 100:.2f}% (S {s['sub']} D {s['del']} I {s['ins']} of {s['ref_words']} words, "
              f"{s['n']} utterances)", file=sys.stderr)
    print(f"{res.utterances_per_s:.2f} utterances/s", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import describe, export
    from .deploy.transcribe import TranscribeError

    try:
        result = export(args.source, to=args.to, quantization=args.quantization, model=args.model,
                        runs_dir=args.runs and project_path(args.runs), parity=not args.no_parity,
                        sample=args.sample, device=args.device, causes=args.faster_whisper_causes,
                        faster_whisper=not args.no_faster_whisper)
    except (TranscribeError, FileNotFoundError, ValueError) as exc:
        return user_error("export", exc)
    print(describe(result))
    parity = result.get("parity")
    return 0 if not parity or all(a["ok"] for a in parity["acceptance"].values()) else 1


def _add_launch_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="expand params/sweeps/<name>.yaml into runs and execute them")
    p.add_argument("sweep")
    where = p.add_mutually_exclusive_group()  # on Ray the cluster's slots set the parallelism
    where.add_argument("--jobs", type=count, default=1, help="runs in parallel on this machine")
    where.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                       help="run each run as a Ray task: auto (the running cluster), local (a fresh one here) or host:port")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-analysis", action="store_true", help="skip the analysis notebook afterwards")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("search", help="an Optuna study over params/search/<name>.yaml: every trial a run")
    p.add_argument("search")
    p.add_argument("--trials", type=count, default=None, help="finished trials the study ends with (default: the file's 'trials')")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=count, default=1, help="trials in parallel on this machine")
    where.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                       help="each trial's run a Ray task, as many at a time as the cluster has GPUs (else CPUs); "
                            "the storage must be reachable from every node")
    p.add_argument("--storage", default=None, help="an Optuna storage URL (default: sqlite:///<output_dir>/search-<name>.db)")
    p.add_argument("--no-analysis", action="store_true", help="skip the analysis notebook afterwards")
    p.set_defaults(func=cmd_search)


def _add_data_parsers(sub) -> None:
    p = sub.add_parser("demo-data", help="synthesize the demo corpus (espeak-ng, flite)",
                       description="Synthesize the offline demo corpus: English into data/demo (train, domain, heldout, "
                                   "replay, dev sets), or with --language fr the French domain-only scenario into data/demo_fr.")
    demo_data_arguments(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("real-speech", help="build the real-speech sanity set (data/real/) from pocketsphinx-testdata "
                                           "and moonshine-voice's recordings")
    real_speech_arguments(p)
    p.set_defaults(func=cmd_real_speech)

    p = sub.add_parser("import-model", help="convert a bundled Whisper (or a CTranslate2 Whisper folder) to transformers")
    p.add_argument("src", nargs="?", help="a bundled name (bundled:whisper-tiny.en, the default; bundled:whisper-base) "
                                          "or a CTranslate2 Whisper export folder")
    p.add_argument("--dst", help="output folder for a converted SRC")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_import_model)


def _add_deploy_parsers(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests with a model and an adapter or run")
    p.add_argument("inputs", nargs="+", help="audio files, folders (recursive) or JSONL manifests")
    p.add_argument("--model", help="a bundled name, a local folder or a hub id (default: the run's model)")
    p.add_argument("--adapter", help="a run id, a run folder (its adapter_best/) or an adapter folder")
    p.add_argument("--output", "-o", help="write the hypotheses here (default: print input<TAB>hypothesis, the input as manifest:line or the audio path)")
    p.add_argument("--format", choices=("jsonl", "csv", "txt"), default="jsonl")
    p.add_argument("--batch-size", type=count, default=None, help="clips per batch (default: the run's eval_batch_size, else 16)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--runs", default=None, help="where run ids are looked up (default: executed/)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("export", help="export a run's adapter (merged, CTranslate2) to executed/<run>/export/ with a parity report")
    p.add_argument("source", help="a run id, a run folder or an adapter folder")
    p.add_argument("--to", default="merged", choices=("merged", "ct2"),
                   help="merged: a standalone transformers folder; ct2: CTranslate2 / faster-whisper (Whisper only)")
    p.add_argument("--quantization", default="int8", choices=("float32", "float16", "int8"), help="CTranslate2 weights (with --to ct2)")
    p.add_argument("--model", help="the base model, when the source is a bare adapter folder")
    p.add_argument("--sample", type=int, default=200, help="seeded clips per set for the parity report (0: all)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity report")
    p.add_argument("--no-faster-whisper", action="store_true",
                   help="leave faster-whisper's rows (the README's call, its defaults, with VAD) out of the parity report")
    p.add_argument("--faster-whisper-causes", action="store_true",
                   help="also measure why faster-whisper differs from the kit, one setting at a time (export/faster_whisper_causes.md)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", default=None)
    p.set_defaults(func=cmd_export)


def _add_analysis_parsers(sub) -> None:
    runs = {"default": "executed", "help": "the folder of run records (default executed/, relative to the project root)"}
    p = sub.add_parser("matrix", help="write run_matrix.md and .csv (and run_archive.md) in the runs folder from its run records")
    p.add_argument("--runs", **runs)
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("archive", help="move a run out of the matrix into the archive table, with a reason")
    p.add_argument("run_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--runs", **runs)
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("unarchive", help="bring an archived run back into the matrix")
    p.add_argument("run_id")
    p.add_argument("--runs", **runs)
    p.set_defaults(func=cmd_unarchive)

    p = sub.add_parser("analysis", help="execute notebooks/analysis.ipynb over the run records, into <runs>/analysis.ipynb")
    p.add_argument("--runs", **runs)
    p.set_defaults(func=cmd_analysis)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="lorakit", description="LoRA/DoRA experiments on speech models")
    parser.add_argument("--version", action="version", version=f"lorakit {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute notebooks/train.ipynb for a recipe into executed/<name>/")
    p.add_argument("recipe", help="params/<name>.yaml (only the values that differ from params/default.yaml)")
    p.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override a parameter (as papermill -p)")
    p.add_argument("--force", action="store_true", help="run again even if finished (deletes the old record)")
    p.add_argument("--quiet", action="store_true", help="no cell output on the terminal")
    p.set_defaults(func=cmd_run)

    _add_launch_parsers(sub)

    _add_analysis_parsers(sub)

    _add_data_parsers(sub)
    _add_deploy_parsers(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        return user_error(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
