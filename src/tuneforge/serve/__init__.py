"""`tuneforge serve` (layer 6): an OpenAI-compatible HTTP API over a trained run or an export: app (factory),
routes (classify, chat), backends, the model worker, context, protocol and error handlers."""
