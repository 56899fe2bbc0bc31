"""After training: transcribe new audio with an adapter, export it (merged, CTranslate2) and prove
that every exported form decodes like the evaluated one. Imports `lorakit.experiment`, `config`, `record`."""
