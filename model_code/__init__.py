"""Generative models in function space: the library behind train.py, eval.py and sample.py."""
