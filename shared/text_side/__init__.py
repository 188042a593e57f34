"""The text side of an embedding arm: what it predicts into and how a prediction is scored and read.

``y_encoder`` (target text -> unit embedding, and its disk cache), ``y_decoder`` (embedding -> text:
a small trained decoder or SONAR's), ``seen_decoder`` (the decoder's fair budget: the captions the arm
saw by a checkpoint), ``losses`` (InfoNCE and the paper's ablations) and ``config`` (their sections).
``shared/embedding_arm.py`` puts them together as a base class. Kept free of imports here, so the
config loader can read ``config`` without loading torch.
"""
