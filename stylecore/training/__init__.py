"""Training of the feed-forward networks: AdaIN decoders and Johnson TransformerNets.

- ``data``: image folders → deterministic random crops (a batch is a pure function of seed and step).
- ``loss_nets``: frozen loss networks from weight specs (AdaIN encoder, VGG16 for Johnson).
- ``loop``: the shared optimisation loop with checkpoints, resume and the loss CSV.
- ``adain`` / ``johnson``: the two recipes (``train_adain``, ``train_johnson``).
- ``offline_model``: the reproducible recipe of the small built-in model (``python -m stylecore.training.offline_model``).
"""
