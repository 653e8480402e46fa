"""The gRPC ingress: a service generated from a .proto (grpcio-tools), served by the proxy
and answered by a deployment's method of the RPC's name, over a real gRPC channel."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

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
