"""One module per notebook: that notebook's orchestration, summary tables and figures."""
