"""Serving the active learner: SavedModel export, REST client, terminal demo.

- `export.serving`: the `tf.Module` whose functions are the stateless serving
  signatures (begin, select, observe, predict, metadata).
- `export.saved_model`: `python -m export.saved_model` writes a versioned
  SavedModel for TF Serving from a trained model directory.
- `export.client`: a standard-library client for TF Serving's REST API.
- `export.elicit`: `python -m export.elicit` asks a person to rate movies in
  the order the learned policy picks, then predicts the rest.
"""
