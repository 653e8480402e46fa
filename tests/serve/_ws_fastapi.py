"""A FastAPI WebSocket route on a deployment's method (imported by test_websocket when
fastapi is installed)."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from runtime import serve

api = FastAPI()


@serve.deployment
@serve.ingress(api)
class Counter:
    def __init__(self) -> None:
        self.seen = 0

    @api.websocket("/ws")
    async def count(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                self.seen += 1
                await websocket.send_text(f"{text}:{self.seen}")
        except WebSocketDisconnect:
            pass
