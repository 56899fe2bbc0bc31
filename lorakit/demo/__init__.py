"""The offline demo corpus (espeak-ng/flite voices, clinical dictation vs everyday speech): a data
builder, not library code. Imports nothing from lorakit but `lorakit.config`."""
