"""The gRPC ingress: a service generated from a .proto (grpcio-tools), served by the proxy
and answered by a deployment's method of the RPC's name, over a real gRPC channel."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import runtime
from runtime import serve

grpc = pytest.importorskip("grpc")
protoc = pytest.importorskip("grpc_tools.protoc")

pytestmark = pytest.mark.timeout(120)

PROTO = """
syntax = "proto3";
package greet;
service Greeter {
  rpc SayHello (HelloRequest) returns (HelloReply);
  rpc Fail (HelloRequest) returns (HelloReply);
  rpc SayHellos (HelloRequest) returns (stream HelloReply);
  rpc Collect (stream HelloRequest) returns (HelloReply);
}
message HelloRequest { string name = 1; }
message HelloReply { string message = 1; string model = 2; }
"""


@serve.deployment(num_replicas=2)
class Greeter:
    async def SayHello(self, request: object) -> object:
        import greet_pb2

        return greet_pb2.HelloReply(
            message=f"hello {request.name}",  # type: ignore[attr-defined]
            model=serve.get_multiplexed_model_id(),
        )

    async def Fail(self, request: object) -> object:
        raise ValueError("no greeting today")

    async def SayHellos(self, request: Any) -> AsyncIterator[object]:
        """Server streaming: ``name`` is "<word>:<count>[:<marker file>]"; a count of -1
        streams until cancelled, 'boom' fails after two replies."""
        import greet_pb2

        word, count, *marker = request.name.split(":", 2)
        try:
            i = 0
            while int(count) < 0 or i < int(count):
                if word == "boom" and i == 2:
                    raise RuntimeError("the stream broke")
                yield greet_pb2.HelloReply(message=f"{word} {i}")
                i += 1
                await asyncio.sleep(0.01 if int(count) < 0 else 0)
        finally:
            if marker:  # a tiny local file: no need to leave the loop for it
                os.close(os.open(marker[0], os.O_CREAT | os.O_WRONLY, 0o600))


@pytest.fixture(scope="module")
def grpc_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    gen = str(tmp_path_factory.mktemp("grpc-gen"))
    with open(os.path.join(gen, "greet.proto"), "w") as f:
        f.write(PROTO)
    assert protoc.main(["protoc", f"-I{gen}", f"--python_out={gen}",
                        f"--grpc_python_out={gen}", "greet.proto"]) == 0  # fmt: skip
    old_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (gen, old_path) if p)  # the nodes
    sys.path.insert(0, gen)
    old_tmp = os.environ.get("RUNTIME_TMPDIR")
    os.environ["RUNTIME_TMPDIR"] = str(tmp_path_factory.mktemp("grpc-mesh"))
    runtime.init(num_cpus=2)
    try:
        serve.start(
            http_options={"port": 0},
            grpc_options=serve.gRPCOptions(
                port=0, grpc_servicer_functions=["greet_pb2_grpc.add_GreeterServicer_to_server"]
            ),
        )
        serve.run(Greeter.bind(), name="greeter", route_prefix=None)
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        (proxy,) = runtime.get(controller.proxies.remote()).values()
        port = runtime.get(proxy.grpc_port.remote())
        assert serve.status().grpc_port == port
        yield port
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()
            os.environ["PYTHONPATH"] = old_path
            sys.path.remove(gen)
            if old_tmp is None:
                os.environ.pop("RUNTIME_TMPDIR", None)
            else:
                os.environ["RUNTIME_TMPDIR"] = old_tmp


def test_a_unary_rpc_is_answered_by_the_deployment(grpc_port: int) -> None:
    import greet_pb2
    import greet_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = greet_pb2_grpc.GreeterStub(channel)
        reply = stub.SayHello(
            greet_pb2.HelloRequest(name="Ada"),
            metadata=(("application", "greeter"), ("multiplexed_model_id", "m7")),
            timeout=30,
        )
        assert (reply.message, reply.model) == ("hello Ada", "m7")
        # The only application is the default one.
        assert stub.SayHello(greet_pb2.HelloRequest(name="Bo"), timeout=30).message == "hello Bo"
        with pytest.raises(grpc.RpcError) as err:
            stub.Fail(greet_pb2.HelloRequest(name="x"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "no greeting today" in err.value.details()  # a loopback bind shows the text
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(
                greet_pb2.HelloRequest(name="x"), metadata=(("application", "nope"),), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_server_streaming_rpc_sends_each_item_as_it_comes(grpc_port: int) -> None:
    import greet_pb2
    import greet_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = greet_pb2_grpc.GreeterStub(channel)
        replies = stub.SayHellos(greet_pb2.HelloRequest(name="hi:5"), timeout=30)
        assert [r.message for r in replies] == [f"hi {i}" for i in range(5)]
        # A failure midway ends the stream with INTERNAL after what was sent.
        got = []
        with pytest.raises(grpc.RpcError) as err:
            for reply in stub.SayHellos(greet_pb2.HelloRequest(name="boom:9"), timeout=30):
                got.append(reply.message)
        assert got == ["boom 0", "boom 1"]
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "the stream broke" in err.value.details()
        # Client streaming is not taken: a clear status, not a hang.
        with pytest.raises(grpc.RpcError) as err:
            stub.Collect(iter([greet_pb2.HelloRequest(name="a")]), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_client_that_cancels_a_stream_closes_the_generator(grpc_port: int, tmp_path) -> None:
    import greet_pb2
    import greet_pb2_grpc

    marker = str(tmp_path / "closed")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = greet_pb2_grpc.GreeterStub(channel)
        replies = stub.SayHellos(greet_pb2.HelloRequest(name=f"on:-1:{marker}"), timeout=30)
        assert next(replies).message == "on 0"
        assert not os.path.exists(marker)
        replies.cancel()
        deadline = time.monotonic() + 30
        while not os.path.exists(marker):  # the generator's finally ran on its replica
            assert time.monotonic() < deadline, "the generator was not closed"
            time.sleep(0.02)
