"""The private internals of Twisted, autobahn, daphne, channels_redis, asgiref and httpx2 that we read are still there.

chatsite/daphne_server.py, streaming/layers.py, streaming/broadcast.py and streaming/providers/transport.py reach
below these libraries' public APIs, so
requirements.in pins them exactly. Before a pin moves, this file says whether what we rely on
survived: each check names the module of ours that needs it.
"""

import inspect
import threading
from importlib.metadata import version
from pathlib import Path

import httpcore2
import httpx2
import pytest
from asgiref.sync import AsyncToSync, SyncToAsync
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnWebSocketProtocol
from channels_redis import pubsub, utils
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.protocols.policies import ProtocolWrapper

REQUIREMENTS_IN = Path(__file__).resolve().parent.parent / "requirements.in"


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def assigns(cls: type, *attributes: str) -> None:
    """Check that `cls`'s source sets each `self.<attribute>`, or that the class has it."""
    source = inspect.getsource(cls)
    for attribute in attributes:
        assert hasattr(cls, attribute) or f"self.{attribute} =" in source, f"{cls.__qualname__}.{attribute} is gone"


@pytest.mark.parametrize(
    "distribution", ["Twisted", "autobahn", "channels-redis", "daphne", "asgiref", "httpx2", "httpcore2"]
)
def test_libraries_read_below_their_api_are_pinned_to_what_is_installed(distribution):
    """requirements.in pins each of them exactly, at the version these checks ran against."""
    pins = dict(
        line.split("==", 1)
        for line in REQUIREMENTS_IN.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins[distribution].strip() == version(distribution)


def test_twisted_transport_internals_for_the_unsent_byte_count():
    """daphne_server.unsent_bytes counts dataBuffer past offset, and _tempDataLen, as Twisted buffers writes."""
    assigns(FileDescriptor, "dataBuffer", "offset", "_tempDataLen", "connected")
    # A TCP connection (the socket transport under daphne) is such a FileDescriptor, and can be aborted.
    assert issubclass(tcp.Connection, FileDescriptor) and callable(tcp.Connection.abortConnection)
    buffer_full = inspect.getsource(FileDescriptor._isSendBufferFull)
    for name in ("dataBuffer", "_tempDataLen"):
        assert name in buffer_full, f"Twisted no longer counts {name} as unsent"
    # `offset` marks how much of dataBuffer the kernel has taken already.
    assert "self.offset" in inspect.getsource(FileDescriptor.doWrite)
    # socket_transport unwraps TLS and policies wrappers through `.transport`.
    assigns(ProtocolWrapper, "transport")


def test_daphne_server_hooks():
    """BoundedServer overrides handle_reply and kill_all_applications; the CLI builds `server_class`."""
    assert inspect.iscoroutinefunction(Server.handle_reply)
    assert parameters(Server.handle_reply) == ["self", "protocol", "message"]
    assert parameters(Server.kill_all_applications) == ["self"]
    assert "kill_all_applications" in inspect.getsource(Server.run)  # still a "before shutdown" trigger
    assert CommandLineInterface.server_class is Server
    assert "self.server_class(" in inspect.getsource(CommandLineInterface.run)
    assert callable(CommandLineInterface.entrypoint)


def test_daphne_websocket_protocol_internals():
    """close_slow_client reads client_addr, feeds application_queue and sets muted, which daphne checks."""
    assigns(WebSocketProtocol, "client_addr", "application_queue", "muted")
    assert "if self.muted" in inspect.getsource(WebSocketProtocol.onMessage)
    assert "not self.muted" in inspect.getsource(WebSocketProtocol.onClose)


def test_autobahn_prepared_message_send():
    """send_frame writes a prepared message's payloadHybi itself where autobahn would only sendData it."""
    send = inspect.getsource(AutobahnWebSocketProtocol.sendPreparedMessage)
    assert "self._perMessageCompress is None" in send and "self.sendData(preparedMsg.payloadHybi)" in send
    assert "len(self.send_queue) > 0" in inspect.getsource(AutobahnWebSocketProtocol.sendData)
    assert "self.socket: socket.socket = skt" in inspect.getsource(tcp.Connection.__init__)
    assigns(FileDescriptor, "disconnecting")


def test_autobahn_close_handshake():
    """close_slow_client sets closeHandshakeTimeout and calls sendClose(code=, reason=)."""
    assert issubclass(WebSocketProtocol, AutobahnWebSocketProtocol)
    assert "closeHandshakeTimeout" in inspect.getsource(AutobahnWebSocketProtocol)
    assert parameters(AutobahnWebSocketProtocol.sendClose)[:3] == ["self", "code", "reason"]


def test_channels_redis_pubsub_internals():
    """streaming.layers subclasses the pub/sub layer's shard and loop layer and reads their private state."""
    shard = pubsub.RedisSingleShardConnection
    assert parameters(shard.__init__) == ["self", "host", "channel_layer"]
    assigns(shard, "_redis")
    assert callable(shard._ensure_redis)

    loop_layer = pubsub.RedisPubSubLoopLayer
    assert parameters(loop_layer.__init__)[:2] == ["self", "hosts"]
    assert "channel_layer" in parameters(loop_layer.__init__)
    assigns(loop_layer, "channels", "channel_layer", "_shards")
    assert "self._shards" in inspect.getsource(loop_layer._get_shard)
    assert parameters(loop_layer._subscribe_to_channel) == ["self", "channel"]
    assert "self.channels[channel]" in inspect.getsource(loop_layer._subscribe_to_channel)
    assert callable(loop_layer._get_group_channel_name)

    layer = pubsub.RedisPubSubChannelLayer
    assigns(layer, "_args", "_kwargs", "_layers")
    assert callable(layer._get_layer) and callable(layer.serialize)
    assert parameters(utils._wrap_close) == ["proxy", "loop"]
    assert callable(utils.decode_hosts)


def test_asgiref_records_the_calling_loop_per_thread():
    """broadcast._calling_loop reads the loop SyncToAsync records for its thread, as AsyncToSync does."""
    assert isinstance(SyncToAsync.threadlocal, threading.local)
    handler = inspect.getsource(SyncToAsync.thread_handler)
    assert "self.threadlocal.main_event_loop = loop" in handler
    assert "self.threadlocal.main_event_loop_pid = os.getpid()" in handler
    assert '"main_event_loop"' in inspect.getsource(AsyncToSync.__call__)


def test_daphne_and_autobahn_internals_for_send_frame():
    """BoundedServer.send_frame writes a frame's autobahn PreparedMessage where daphne's handle_reply would send."""
    # create_application hands the application the scope it is given, extensions included.
    assert parameters(Server.create_application) == ["self", "protocol", "scope"]
    assert "scope=scope" in inspect.getsource(Server.create_application)
    # send_frame checks what handle_reply and WebSocketProtocol.handle_reply check before a send.
    assert 'self.connections[protocol].get(\n            "disconnected"' in inspect.getsource(Server.handle_reply)
    assert "self.STATE_CONNECTING" in inspect.getsource(WebSocketProtocol.handle_reply)
    assert "self.sendMessage(content.encode(" in inspect.getsource(WebSocketProtocol.serverSend)
    # A PreparedMessage is framed once; a socket sends its bytes, or compresses the payload itself.
    assert parameters(PreparedMessage.__init__) == ["self", "payload", "isBinary", "applyMask", "doNotCompress"]
    assigns(PreparedMessage, "payloadHybi", "payload", "binary", "doNotCompress")
    assert parameters(AutobahnWebSocketProtocol.sendPreparedMessage) == ["self", "preparedMsg"]


def test_httpx2_transport_sends_through_the_pool_it_keeps_in_pool():
    """streaming/providers/transport.py replaces `_pool` with a pool on its asyncio backend."""
    assert isinstance(vars(httpx2.AsyncHTTPTransport()).get("_pool"), httpcore2.AsyncConnectionPool)
    for method in (httpx2.AsyncHTTPTransport.handle_async_request, httpx2.AsyncHTTPTransport.aclose):
        assert "self._pool." in inspect.getsource(method), f"{method.__qualname__} no longer uses _pool"
    assert "network_backend" in parameters(httpcore2.AsyncConnectionPool)
