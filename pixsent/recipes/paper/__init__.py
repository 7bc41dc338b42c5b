"""The paper (Campos et al. 2017): variants, prototxt generation, solver arithmetic, the Twitter dataset,
published numbers and tables, and the recipe the fold workflow trains (registered on import)."""

from pixsent.recipes.paper import recipe  # noqa: F401  (registers the ``paper`` recipe and its deploy nets)
