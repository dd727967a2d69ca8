"""Workflows on data that use models or training (layer 6): model-based label-noise features
(`cleaning.noise`, registered in NOISE_FEATURES) and `tuneforge data inspect` / `data prepare`
(`cleaning.workflows`)."""

from tuneforge.cleaning import noise  # noqa: F401  (registration)
