"""Recipes: what the fold workflow trains. ``paper`` (Campos et al. 2017's CaffeNet variants) and ``demo``
(a small net on a generated image set). A recipe named N lives in ``pixsent.recipes.N`` and registers itself
with pixsent.workflow.pipeline.register_recipe when imported; get_recipe imports it on first use.
"""
