"""How often a queued Optuna trial goes to two workers at once, on lorakit's SQLite study storage.

    .venv/bin/python bench/search_handout.py                   # lorakit's storage (BEGIN IMMEDIATE)
    .venv/bin/python bench/search_handout.py --without-lock    # the same storage without it (Optuna's own behaviour)
    .venv/bin/python bench/search_handout.py --separate        # each worker opens its own storage (as processes do)

`--trials` trials are queued, then `--workers` threads ask the study for `trials / workers` trials
each at the same moment; a trial number handed out twice is a duplicate (two runs of one run id).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

import lorakit.launch.search as search  # noqa: E402


def measure(trials: int, workers: int, separate: bool) -> Counter:
    url = f"sqlite:///{tempfile.mkdtemp()}/handout.db"
    study = optuna.create_study(storage=search.open_storage(url, 60), study_name="handout")
    for i in range(trials):
        study.enqueue_trial({"x": i})
    handed, start = [], threading.Barrier(workers)

    def ask() -> None:
        mine = optuna.load_study(study_name="handout", storage=search.open_storage(url, 60)) if separate else study
        start.wait()
        for _ in range(trials // workers):
            handed.append(mine.ask().number)

    threads = [threading.Thread(target=ask) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(handed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--separate", action="store_true", help="one storage per worker")
    parser.add_argument("--without-lock", action="store_true", help="switch lorakit's BEGIN IMMEDIATE off")
    args = parser.parse_args()
    if args.without_lock:
        search._lock_on_begin = lambda engine: None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # heartbeats outside optimize(): irrelevant to the hand-out
    for _ in range(args.repeats):
        handed = measure(args.trials, args.workers, args.separate)
        duplicates = sum(n - 1 for n in handed.values())
        print(f"{sum(handed.values())} hand-outs, {len(handed)} distinct trials, {duplicates} duplicates")


if __name__ == "__main__":
    main()
