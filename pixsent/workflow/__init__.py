"""The fold workflow: steps with stamps in run folders, training as a child process, evaluation, prediction.

It knows what to train only through the recipe registry (pixsent.workflow.pipeline.get_recipe).
"""
