"""Models that are not classifiers: what a segmentation, detection or embedding model's score is (the maths in
:mod:`.maths`, numpy only), its parameters (:mod:`.spec`) and how a run builds the score from the model's
unoccluded output (:mod:`.scoring`). The engine occludes them like any ``score(batch)``."""
