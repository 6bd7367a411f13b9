"""The TF Serving REST client, kept importable here: it lives in the library.

`RestClient` and `ServingError` are `active_learning.rest_client`'s (standard
library and numpy only); import them from there in new code.
"""

from active_learning.rest_client import RestClient, ServingError  # noqa: F401

__all__ = ["RestClient", "ServingError"]
