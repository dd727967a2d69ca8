"""The web UI (tuneforge webui): a thin client over the CLI and the run directories."""
