"""The analyses: a model and an input in, results out (explanations, checks, layers, bias, ...); they write nothing."""
