"""Base models (layer 4): resolving and loading (builtins, local directories, converted checkpoints), vision and
multi-task model classes, the one transformer-block finder, shrinking a student, embeddings and generation."""
