"""nft transactions through libnftables in this process (no fork and exec per
change), in a network namespace of choice.

``Libnft(netns)`` owns one thread: it enters ``netns`` (``setns``: a
network namespace is per thread) and creates the nft context there, so every
netlink socket it opens is that namespace's. ``await run(script)`` runs an nft
script as ``nft -f`` would: one atomic transaction. ``Libnft.load()`` is None
when libnftables cannot be loaded; the caller then runs the ``nft`` command.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000
#: nft_ctx_output_flags: NFT_CTX_OUTPUT_JSON
OUTPUT_JSON = 1 << 4


class LibnftError(Exception):
    pass


class Libnft:
    def __init__(self, lib: ctypes.CDLL, netns: str | None) -> None:
        self.lib = lib
        self.netns = netns
        self._ctx: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libnft")

    @classmethod
    def load(cls, netns: str | None = None) -> Libnft | None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_int
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        return cls(lib, netns)

    def _enter(self) -> int:
        if self._ctx is None:
            if self.netns:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fd = os.open(f"/var/run/netns/{self.netns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise LibnftError(f"setns {self.netns}: {os.strerror(ctypes.get_errno())}")
                finally:
                    os.close(fd)
            ctx = self.lib.nft_ctx_new(0)
            if not ctx:
                raise LibnftError("nft_ctx_new failed")
            self.lib.nft_ctx_buffer_output(ctx)
            self.lib.nft_ctx_buffer_error(ctx)
            self._ctx = ctx
        return self._ctx

    def _run(self, script: str, json_output: bool) -> str:
        ctx = self._enter()
        self.lib.nft_ctx_output_set_flags(ctx, OUTPUT_JSON if json_output else 0)
        rc = self.lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (self.lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
        err = (self.lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        if rc != 0:
            raise LibnftError(err.strip() or f"nft returned {rc}")
        return out

    async def run(self, script: str, *, json_output: bool = False) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, script, json_output)

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._pool.submit(self.lib.nft_ctx_free, ctx).result()
        self._pool.shutdown(wait=True)
