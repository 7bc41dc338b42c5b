"""The paper (Campos et al. 2017): model registry, variants, prototxts, solver arithmetic, and more."""
