"""The one training path (layer 5): the engine and its parts (arguments, trainer, callbacks, speed, progress,
console, finish), the run directory (rundir, runlock, checkpoints, overwrite), distribution, launch and estimate/."""
