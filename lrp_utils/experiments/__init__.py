"""Experiment loops used by the notebooks: functions ``(model, inputs, config) -> pandas.DataFrame``.

One module per topic, each owned by the notebook(s) that use it."""
