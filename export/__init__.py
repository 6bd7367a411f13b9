"""Serving the active learner: SavedModel export, REST client, terminal demo.

- `export.serving`: the `tf.Module` whose functions are the stateless serving
  signatures (begin, select, observe, predict, metadata): input checks, then
  the steps of `active_learning.steps`.
- `export.saved_model`: `python -m export.saved_model` writes a versioned
  SavedModel for TF Serving from a trained model directory.
- `export.client`: the standard-library TF Serving REST client
  (`active_learning.rest_client`), under its older name.
- `export.elicit`: `python -m export.elicit` asks a person to rate movies in
  the order the learned policy picks, then predicts the rest.
"""
