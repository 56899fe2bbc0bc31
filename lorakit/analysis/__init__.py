"""Reads run records, never imports torch: runs, statistics (bootstrap, verdicts, seeds), the run
matrix, the archive, error breakdowns, plots and the error browser. Imports only `lorakit.config` and
`lorakit.record` from outside this folder, so the analysis notebook starts in a second."""
