"""A small TF Serving REST client for the active learner (standard library only).

    client = RestClient("http://localhost:8501/v1/models/active_learner")
    out = client.predict("begin", {"support": movie_ids[None]})
    out["embeddings"], out["state"]            # numpy arrays

Requests use TF Serving's columnar ("inputs") format, which carries whole
named tensors, so a batch of episodes is one request:

    POST <url>:predict  {"signature_name": "select", "inputs": {...}}

The module itself uses only the standard library and numpy (no TensorFlow
op, none of the model code): numpy arrays go out as nested lists and come
back as numpy arrays (TF Serving's JSON carries no dtypes: floats come back
float64, integers int64, strings str; callers cast to the documented
dtypes). `ActiveSession` calls a served model through it; `export.client`
re-exports it.
"""

import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np


class ServingError(RuntimeError):
    """The server answered with an error (e.g. a failed input check).

    Attributes:
      status: the HTTP status code (400 for invalid inputs), or None when the
        server could not be reached.
      message: the server's error message (for this model's input checks it
        names the input and what was expected).
    """

    def __init__(self, message, status=None, url=None):
        super().__init__(f"{url or 'TF Serving'}: HTTP {status}: {message}"
                         if status else f"{url or 'TF Serving'}: {message}")
        self.status = status
        self.message = message
        self.url = url


def _jsonable(value):
    """Nested lists/scalars for numpy arrays and numpy scalars."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "b":
            value = value.astype(np.int32)
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_json(value):
    if isinstance(value, str):
        return value
    return np.asarray(value)


class RestClient:
    """Calls the signatures of a model served by `tensorflow_model_server`.

    Args:
      url: the model's REST address, `http://HOST:PORT/v1/models/NAME`,
        optionally with `/versions/N` or `/labels/LABEL`.
      timeout: seconds to wait for each answer, in all: a server that sends
        its answer a byte at a time is given up on after `timeout` seconds,
        not `timeout` per byte (the socket's own timeout).
    """

    def __init__(self, url, timeout=60.0):
        url = url.rstrip("/")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or "/v1/models/" not in parsed.path:
            raise ValueError(
                f"expected a TF Serving REST model URL like "
                f"http://localhost:8501/v1/models/active_learner, got {url!r}")
        self.url = url
        self.timeout = float(timeout)

    def _request(self, url, body=None):
        """The decoded JSON answer, within `timeout` seconds in total."""
        # urllib's timeout bounds each socket operation, so a server that
        # trickles bytes could hold a caller for many times `timeout`: the
        # request runs in a worker thread that is given up on at the deadline
        # (it ends by itself within one socket timeout).
        outcome = {}

        def work():
            try:
                outcome["value"] = self._request_once(url, body)
            except BaseException as e:  # noqa: BLE001  (re-raised in the caller)
                outcome["error"] = e

        worker = threading.Thread(target=work, daemon=True, name="rest-client")
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise ServingError(f"no complete answer within {self.timeout:g} s (the "
                               "timeout is a deadline for the whole answer); the server is "
                               "overloaded or not a TF Serving endpoint. Raise timeout= "
                               "for slow requests.", url=url)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _request_once(self, url, body):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            raise ServingError(message, status=e.code, url=url) from None
        except urllib.error.URLError as e:
            raise ServingError(f"cannot reach the server ({e.reason})", url=url) from None
        except (OSError, ValueError) as e:  # reset connections, socket timeouts
            raise ServingError(f"the connection failed ({type(e).__name__}: {e})",
                               url=url) from None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
            raise ServingError(
                f"the reply is not JSON ({e}); it begins {raw[:120]!r}. Is the URL a TF "
                "Serving REST model address (http://HOST:8501/v1/models/NAME)?",
                url=url) from None

    def predict(self, signature_name, inputs, output_name=None):
        """Runs one signature; returns {output name: numpy array or str}.

        Args:
          signature_name: e.g. "begin", "select", "observe", "predict".
          inputs: {input name: array-like}.
          output_name: the name of the output when the signature has only one
            (TF Serving then returns the bare value without its name); the
            key "outputs" is used when not given.
        """
        body = {"signature_name": signature_name,
                "inputs": {name: _jsonable(value) for name, value in inputs.items()}}
        answer = self._request(self.url + ":predict", body)
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise ServingError(f"unexpected answer without 'outputs': {str(answer)[:200]}",
                               url=self.url)
        outputs = answer["outputs"]
        if isinstance(outputs, dict):
            return {name: _from_json(value) for name, value in outputs.items()}
        return {output_name or "outputs": _from_json(outputs)}

    def model_metadata(self):
        """TF Serving's own metadata (the signature definitions), as a dict."""
        return self._request(self.url + "/metadata")

    def status(self):
        """TF Serving's model version status, as a dict."""
        return self._request(self.url)

    def metadata(self, signature_prefix=""):
        """The model's `metadata` signature: {name: str, int or float}."""
        out = self.predict(signature_prefix + "metadata", {"dummy": 0})
        return {name: (value if isinstance(value, str) else value.item())
                for name, value in out.items()}
