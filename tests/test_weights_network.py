"""No network wait is unbounded: a local server that accepts connections
and never answers stands in for a proxy that holds them.

The hub (``HF_ENDPOINT``) and URLs point at it with
``HF_HUB_OFFLINE=0``; timeouts are shortened through their environment
variables. The server closes everything and stops by itself after
:data:`LIFETIME` seconds, so a test of code that waits forever fails on
:data:`BOUND` instead of hanging.
"""

import contextlib
import socket
import threading
import time

import pytest
from test_export import COMMIT, fake_hub, tiny_run
from test_weights import FakeHub, timm_writer

from speechbrain_rsc.models.weights import (
    WeightsUnavailableError,
    resolve_weights,
    url_cache_path,
)

LIFETIME = 90.0
BOUND = 60.0
PROXIES = ["http_proxy", "https_proxy", "all_proxy"]


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.connections = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        deadline = time.monotonic() + LIFETIME
        while not self.stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                self.connections.append(self.socket.accept()[0])
        for connection in self.connections:
            connection.close()
        self.socket.close()

    def close(self):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def silent(tmp_path, monkeypatch):
    """A fake hub cache and torch.hub cache, online, behind a silent
    server."""
    import huggingface_hub
    from huggingface_hub import constants

    hub = FakeHub(tmp_path)
    hub.cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setenv("TORCH_HOME", str(hub.torch_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = SilentServer()
    endpoint = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("RSC_DOWNLOAD_TIMEOUT", "2")
    huggingface_hub.close_session()
    server.hub = hub
    yield server
    server.close()
    huggingface_hub.close_session()


@contextlib.contextmanager
def within(bound=BOUND):
    start = time.monotonic()
    yield
    assert time.monotonic() - start < bound


def test_url_download_from_a_silent_server_stops_in_time(silent):
    url = f"http://127.0.0.1:{silent.port}/files/Cnn6_mAP%3D0.343.pth"
    with within(), pytest.raises(WeightsUnavailableError) as error:
        resolve_weights(url, "cnn6")
    message = str(error.value)
    assert "timed out" in message and "RSC_DOWNLOAD_TIMEOUT=2 s" in message
    assert "curl -L -o 'Cnn6_mAP=0.343.pth'" in message
    assert silent.connections  # it did ask
    folder = url_cache_path(url).parent
    assert not folder.exists() or not list(folder.iterdir())


def test_hub_ids_from_a_silent_hub_resolve_in_time(silent):
    # Not cached: an error, in time, saying how to run without network.
    with within(), pytest.raises(WeightsUnavailableError) as error:
        resolve_weights("org/absent", "resnet18")
    assert "HF_HUB_ETAG_TIMEOUT=2 s" in str(error.value)
    assert "HF_HUB_OFFLINE=1" in str(error.value)
    # Cached, by branch: the hub is asked, does not answer, the cache serves.
    commit = silent.hub.add("org/tiny-resnet", timm_writer("resnet18"))
    with within():
        path, record = resolve_weights("org/tiny-resnet", "resnet18")
    assert path.endswith(commit) and record["revision"] == commit
    # Pinned to a cached commit: the hub is never asked.
    asked = len(silent.connections)
    with within(5):
        path, _ = resolve_weights(f"org/tiny-resnet@{commit}", "resnet18")
    assert path.endswith(commit)
    time.sleep(0.3)  # the server's accept loop polls every 0.1 s
    assert len(silent.connections) == asked


def test_rsc_classify_hub_model_behind_a_silent_hub(silent, tmp_path):
    from speechbrain_rsc.inference import load_classifier

    fake_hub(silent.hub.cache, "org/tiny-cnn6", tiny_run(tmp_path / "m", 1))
    with within():
        assert load_classifier("org/tiny-cnn6", "cpu") is not None
    asked = len(silent.connections)
    with within(5):
        assert load_classifier(f"org/tiny-cnn6@{COMMIT}", "cpu") is not None
    time.sleep(0.3)
    assert len(silent.connections) == asked
