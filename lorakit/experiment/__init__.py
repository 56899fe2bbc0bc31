"""One run of the protocol: manifests, leakage, audio, models (+ the bundled converter), inputs,
evaluation, the shared baseline, checkpoints, processes, and the training loop (`train.run`).
Imports only `lorakit.config` and `lorakit.record` from outside this folder."""
