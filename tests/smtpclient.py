"""A raw SMTP client for tests that need exact reply lines or malformed bytes on the wire."""

from __future__ import annotations

import asyncio


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> tuple[RawClient, str]:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        return client, await client.reply()

    async def reply(self, timeout: float = 10.0) -> str:
        """One whole reply; multi-line replies joined with newlines, CRLF removed."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed: " + " | ".join(lines))
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str | bytes) -> str:
        data = line if isinstance(line, bytes) else line.encode()
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def data(self, content: bytes) -> str:
        """DATA with content sent exactly as given (the caller adds the final CRLF.CRLF)."""
        go = await self.cmd("DATA")
        assert go.startswith("354"), go
        self.writer.write(content)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionError, OSError):
            return True
