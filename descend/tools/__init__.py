"""Tools for your own model: the learning-rate range test, tuned comparisons, telemetry, loss landscapes,
and the ``descend train`` command's tasks."""
