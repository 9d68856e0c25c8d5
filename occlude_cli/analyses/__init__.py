"""The analyses: a model and an input in, results out (explanations, faithfulness, checks, layers, bias, stability); they write nothing."""
