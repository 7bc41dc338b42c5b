"""The paper (Campos et al. 2017): model registry, variants and their prototxts, solver arithmetic, and more."""
