"""A small Label Studio REST client (standard library only).

The bridge (`export.label_studio`) needs a handful of Label Studio's REST
endpoints: projects, task import and listing, task data updates, Data
Manager views, predictions and annotations. It calls them here with
`urllib` rather than through `label-studio-sdk`: the SDK 2.x pins
`numpy<2.3` (through `opencv-python-headless`) and would downgrade the numpy
that TensorFlow runs on in the same environment (`pip install --dry-run
label-studio-sdk` shows it). The endpoints used are the same ones the SDK
wraps, documented at https://api.labelstud.io.

Authentication: a legacy API token (`Authorization: Token ...`) or a
personal access token (a JWT refresh token, exchanged at
`/api/token/refresh/` for short-lived access tokens, renewed on HTTP 401).
The token is never logged: `repr()` and every error message leave it out.
"""

import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or could not be reached.

    Attributes:
      status: the HTTP status, or None when the server was not reached.
    """

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def is_local_host(host):
    """True for localhost and loopback addresses (plain HTTP stays on the machine)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url, allow_insecure_http=False):
    """Validates the Label Studio address; returns it without a trailing '/'.

    Plain HTTP to another machine would send the API token and the labels in
    clear text, so it is refused unless `allow_insecure_http`.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--url must be an http(s) address like http://localhost:8080, "
                         f"got {url!r}")
    if parsed.scheme == "http" and not is_local_host(parsed.hostname) \
            and not allow_insecure_http:
        raise ValueError(
            f"--url {url!r} is plain HTTP to a host other than this machine: the API "
            "token and the labels would cross the network unencrypted. Use https://, "
            "or pass --allow_insecure_http if the network is trusted.")
    return url.rstrip("/")


def _looks_like_jwt(token):
    parts = token.split(".")
    return len(parts) == 3 and all(parts) and token.startswith("eyJ")


class LabelStudioClient:
    """Calls Label Studio's REST API.

    Args:
      url: the server, e.g. `http://localhost:8080` (checked by `check_url`
        before it reaches here).
      token: a legacy API token or a personal access token.
      timeout: seconds to wait for each answer.
    """

    def __init__(self, url, token, timeout=60.0):
        if not token:
            raise ValueError("an empty Label Studio token")
        self.url = url.rstrip("/")
        self._token = token
        self._access = None
        self.timeout = float(timeout)

    def __repr__(self):
        return f"LabelStudioClient({self.url!r})"

    # ------------------------------------------------------------ transport
    def _authorization(self, renew=False):
        if not _looks_like_jwt(self._token):
            return f"Token {self._token}"
        if self._access is None or renew:
            answer = self._send("POST", "/api/token/refresh/", {"refresh": self._token},
                                authorization=None)
            self._access = answer["access"]
        return f"Bearer {self._access}"

    def _send(self, method, path, body=None, authorization=None, query=None):
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise LabelStudioError(f"Label Studio {method} {path}: HTTP {e.code}: {detail}",
                                   status=e.code) from None
        except urllib.error.URLError as e:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url} ({e.reason}); "
                                   "is it running? (see docs/label_studio.md)") from None
        return json.loads(text) if text.strip() else None

    def request(self, method, path, body=None, query=None):
        """One API call; JSON in, JSON out (None for an empty answer)."""
        try:
            return self._send(method, path, body, self._authorization(), query)
        except LabelStudioError as e:
            if e.status == 401 and _looks_like_jwt(self._token):
                # Access tokens expire after minutes; renew once and retry.
                return self._send(method, path, body, self._authorization(renew=True), query)
            if e.status == 401:
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the token (HTTP 401). Copy the "
                    "token from Account & Settings; a legacy token works only where the "
                    "organisation enables legacy tokens "
                    "(LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true).", status=401) from None
            raise

    # ------------------------------------------------------------- projects
    def wait_until_up(self, seconds=120.0):
        """Waits for `/health` to answer; raises LabelStudioError after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._send("GET", "/health")
                return
            except LabelStudioError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def projects(self):
        """All projects visible to the token's user."""
        results, page = [], 1
        while True:
            answer = self.request("GET", "/api/projects/", query={"page": page,
                                                                  "page_size": 100})
            results.extend(answer["results"])
            if not answer.get("next"):
                return results
            page += 1

    def create_project(self, **fields):
        return self.request("POST", "/api/projects/", fields)

    def update_project(self, project_id, **fields):
        return self.request("PATCH", f"/api/projects/{project_id}/", fields)

    def import_tasks(self, project_id, tasks):
        """Imports task dicts (`{"data": {...}}`); returns Label Studio's summary."""
        return self.request("POST", f"/api/projects/{project_id}/import", tasks,
                            query={"commit_to_project": "true", "return_task_ids": "true"})

    # ---------------------------------------------------------------- tasks
    def tasks(self, project_id, view_id=None, fields="all"):
        """Tasks with their annotations; in the view's filter and order when given."""
        results, page = [], 1
        query = {"project": project_id, "fields": fields, "page_size": 100}
        if view_id is not None:
            query["view"] = view_id
        while True:
            try:
                answer = self.request("GET", "/api/tasks/", query=dict(query, page=page))
            except LabelStudioError as e:
                if e.status == 404 and page > 1:  # past the last page
                    return results
                raise
            batch = answer["tasks"] if isinstance(answer, dict) else answer
            results.extend(batch)
            total = answer.get("total") if isinstance(answer, dict) else None
            if not batch or (total is not None and len(results) >= total):
                return results
            page += 1

    def update_task(self, task_id, data):
        return self.request("PATCH", f"/api/tasks/{task_id}/", {"data": data})

    def annotate(self, task_id, result, was_cancelled=False):
        """Creates an annotation (what a person's Submit, or Skip, does)."""
        return self.request("POST", f"/api/tasks/{task_id}/annotations/",
                            {"result": result, "was_cancelled": was_cancelled})

    # ---------------------------------------------------------------- views
    def views(self, project_id):
        return self.request("GET", "/api/dm/views/", query={"project": project_id})

    def create_view(self, project_id, data):
        return self.request("POST", "/api/dm/views/", {"project": project_id, "data": data})

    # ---------------------------------------------------------- predictions
    def import_predictions(self, project_id, predictions):
        return self.request("POST", f"/api/projects/{project_id}/import/predictions",
                            predictions)

    def delete_model_version(self, project_id, model_version):
        """Deletes every prediction of `model_version` in the project."""
        return self.request("DELETE", f"/api/projects/{project_id}/model-versions/",
                            {"model_version": model_version})

    def model_versions(self, project_id):
        return self.request("GET", f"/api/projects/{project_id}/model-versions/")
