"""One module per notebook: that notebook's orchestration, summary tables and figures.

==========================  ========  ==================================================
module                      notebook  paper
==========================  ========  ==================================================
``conservative``            01        Ali et al. 2022 (CP-LRP)
``attnlrp``                 02        Achtibat et al. 2024 (AttnLRP)
``linear_attention``        03        You et al. 2025, claim i (implementation invariance)
``loo_layers``              04        You et al. 2025, claim ii (agreement with layer LOO)
``positional``              05        Bakish et al. 2025 (PA-LRP)
``latents``                 06        Achtibat et al. 2024 (latent units: heads, neurons)
==========================  ========  ==================================================

Everything generic lives in the library below them (:mod:`lrp_utils.runner`,
:mod:`lrp_utils.perturbation`, :mod:`lrp_utils.metrics`, :mod:`lrp_utils.tasks`,
:mod:`lrp_utils.audit`, :mod:`lrp_utils.profiling`, ...).
"""
