"""The reference library lxt (AttnLRP authors), as committed fixtures: tiny float64 Hugging Face
models with lxt 2.1's relevances (package data under ``fixtures/``, written by
``tests/fixtures/make_lxt_fixtures.py`` in a separate environment because lxt needs
transformers < 5), a loader that rebuilds each model in transformers 5, and the agreement table
of our explanations with lxt's."""
from .agreement import agreement
from .loader import NAMES, fixture_path, load_fixture

__all__ = ["NAMES", "agreement", "fixture_path", "load_fixture"]
