"""A model's identity: a digest of its configuration and every weight.

Two models with the same architecture and pool size but different weights
give different embeddings and states, so a saved session (which carries
both) is meaningful only with the model that wrote it. The exported
`metadata` signature reports this digest, `ActiveSession` stores it in its
session files and checks it on load. An export of a checkpoint and the
in-memory model restored from it have the same fingerprint.
"""

import hashlib

import numpy as np


def model_fingerprint(model):
    """Hex SHA-256 (first 16 bytes) of `model.config` and its weights, in order.

    The order of `model.weights` is fixed by the config, so the same
    weights give the same digest in any process.
    """
    digest = hashlib.sha256(model.config.to_json().encode("utf-8"))
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable.numpy()))
        # Not the variable paths: Keras numbers layer names per process.
        digest.update(f"{value.dtype.str}:{value.shape}".encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()[:32]
