"""The REST client against misbehaving servers: not JSON, trickled bytes.

The client lives in the library (`active_learning.rest_client`); the old
`export.client` path still gives the same classes.
"""

import http.server
import sys
import threading
import time

from absl.testing import absltest
import pytest

from active_learning import rest_client as client_lib


class _Server:
    """A local HTTP server whose POST handler is `respond(handler)`."""

    def __init__(self, respond):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (the http.server API)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                respond(self)

            def log_message(self, *args):
                del args

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1/models/m"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(handler, status, body, content_type="application/json"):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class ClientTest(absltest.TestCase):

    def serve(self, respond):
        server = _Server(respond)
        self.addCleanup(server.close)
        return server.url

    def test_reply_that_is_not_json_is_named(self):
        url = self.serve(lambda h: _send(h, 200, b"<html>proxy login</html>", "text/html"))
        with self.assertRaisesRegex(client_lib.ServingError,
                                    "reply is not JSON.*<html>proxy login"):
            client_lib.RestClient(url, timeout=5).predict("begin", {"support": [[1]]})

    def test_error_reply_that_is_not_json_keeps_its_text(self):
        url = self.serve(lambda h: _send(h, 502, b"Bad Gateway", "text/plain"))
        with self.assertRaises(client_lib.ServingError) as caught:
            client_lib.RestClient(url, timeout=5).predict("begin", {"support": [[1]]})
        self.assertEqual((caught.exception.status, caught.exception.message),
                         (502, "Bad Gateway"))

    def test_json_without_outputs_is_named(self):
        url = self.serve(lambda h: _send(h, 200, b"[1, 2]"))
        with self.assertRaisesRegex(client_lib.ServingError, "without 'outputs'"):
            client_lib.RestClient(url, timeout=5).predict("begin", {"support": [[1]]})

    def test_trickling_server_meets_the_timeout_as_a_total_deadline(self):
        body = b'{"outputs": {"x": [' + b"1, " * 200 + b"1]}}"

        def trickle(handler):
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for i in range(len(body)):  # a byte every 50 ms: 30 s in all
                try:
                    handler.wfile.write(body[i:i + 1])
                    handler.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)

        url = self.serve(trickle)
        start = time.monotonic()
        with self.assertRaisesRegex(client_lib.ServingError, "no complete answer within 1 s"):
            client_lib.RestClient(url, timeout=1.0).predict("begin", {"support": [[1]]})
        # Every byte came well within the socket timeout; only a deadline on
        # the whole answer stops this.
        self.assertLess(time.monotonic() - start, 1.8)

    def test_answers_within_the_deadline_pass(self):
        url = self.serve(lambda h: _send(h, 200, b'{"outputs": {"index": [3]}}'))
        out = client_lib.RestClient(url, timeout=5).predict("select", {"k": 1})
        self.assertEqual(out["index"].tolist(), [3])

    def test_export_client_is_the_library_client(self):
        from export import client as export_client  # pylint: disable=g-import-not-at-top

        self.assertIs(export_client.RestClient, client_lib.RestClient)
        url = self.serve(lambda h: _send(h, 503, b'{"error": "overloaded"}'))
        with self.assertRaisesRegex(export_client.ServingError, "HTTP 503: overloaded"):
            client_lib.RestClient(url, timeout=5).predict("begin", {"support": [[1]]})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
