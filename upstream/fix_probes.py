"""Probes for FINDINGS.md: each suggested adapter fix, as a monkeypatch, to confirm a root cause.

Not part of the harness and not a fix: these patch private functions of ``nervenet_langgraph`` and
``nervenet.portal`` the way FINDINGS.md proposes to change them, so that a failure group can be
shown to go green (or a test shown to need a given fix, by leaving that probe out). Load it as a
pytest plugin next to ``nervenet_plugin`` and pick probes with ``NERVENET_FIX_PROBES``::

    NERVENET_FIX_PROBES=serde,copy python upstream/run.py --only distributed \\
        tests/test_runtime.py -- -p fix_probes

Probes: portal, serde, copy, nodeerror, checkpointer, tools, nestedmsg, nullresume, stream, call,
validation, draw, runtime (see FINDINGS.md for what each stands for). They are written against
the adapter as of the commit FINDINGS.md names and may stop applying as it changes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import os

FIXES = set(filter(None, os.environ.get("NERVENET_FIX_PROBES", "").split(",")))


# --- portal: run hops in a clean context -------------------------------------------------
if "portal" in FIXES:
    import nervenet.portal as P

    def _submit(make, home):
        fut = concurrent.futures.Future()

        def start():
            task = home.create_task(P._awaitable(make), context=contextvars.Context())
            asyncio.futures._chain_future(task, fut)

        home.call_soon_threadsafe(start, context=contextvars.Context())
        return fut

    _orig_call = P.Portal.call

    def call(self, make):
        home = self._home_for_sync_caller()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home or not home.is_running():
            return _orig_call(self, make)
        return _submit(make, home).result()

    async def run(self, make):
        running = asyncio.get_running_loop()
        home = self._loop
        if home is None or home is running or home.is_closed():
            if home is None or home.is_closed():
                self.adopt_running_loop()
            return await make()
        return await asyncio.wrap_future(_submit(make, home))

    P.Portal.call = call
    P.Portal.run = run


# --- serde: revive the graph's own classes by identity, not by import ------------------
if "serde" in FIXES:
    import nervenet_langgraph.serde as S
    import ormsgpack
    import typing_extensions
    from langgraph.checkpoint.serde import _msgpack as _lg_msgpack
    from langgraph.checkpoint.serde import jsonplus as J

    S.typing.is_typeddict = (
        typing_extensions.is_typeddict
    )  # serde._collect uses typing.is_typeddict

    def strict_serializer(schemas=(), allowed_types=()):
        allowed = set(allowed_types)
        for schema in schemas:
            S._collect(schema, allowed, depth=0)
        by_name = {(t.__module__, t.__name__): t for t in allowed}
        base = J._create_msgpack_ext_hook(set(by_name) or None)
        opt = ormsgpack.OPT_NON_STR_KEYS

        def hook(code, data):
            if code == J.EXT_DELTA_SNAPSHOT:
                return J._DeltaSnapshot(ormsgpack.unpackb(data, ext_hook=hook, option=opt))
            if code not in (0, 1, 2, 4, 5):
                return base(code, data)
            tup = ormsgpack.unpackb(data, ext_hook=hook, option=opt)
            key = (tup[0], tup[1])
            cls = by_name.get(key)
            if cls is None:
                if key not in _lg_msgpack.SAFE_MSGPACK_TYPES:
                    return tup[2]
                if key == ("langgraph.types", "Send") and code == 1:
                    return J._send_from_args(tup[2])
                try:
                    cls = getattr(importlib.import_module(tup[0]), tup[1])
                except Exception:
                    return tup[2]
            try:
                if code == 0:
                    return cls(tup[2])
                if code == 1:
                    return cls(*tup[2])
                if code == 2:
                    return cls(**tup[2])
                try:
                    return cls(**tup[2])
                except Exception:
                    return (cls.model_construct if code == 5 else cls.construct)(**tup[2])
            except Exception:
                return tup[2]

        return J.JsonPlusSerializer(
            pickle_fallback=False,
            allowed_json_modules=None,
            allowed_msgpack_modules=sorted(by_name) or None,
            __unpack_ext_hook__=hook,
        )

    S.strict_serializer = strict_serializer
    import nervenet_langgraph.graph as G

    G.strict_serializer = strict_serializer


# --- node error: ship CONFIG_KEY_NODE_ERROR to error-handler nodes -----------------------
if "nodeerror" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN
    from langgraph._internal._constants import CONF, CONFIG_KEY_NODE_ERROR
    from langgraph.errors import NodeError
    from nervenet_langgraph.wire import exception_args, qualified_name, revive_exception

    _orig_describe = RN.describe_call
    _cur_serde = contextvars.ContextVar("serde", default=None)

    def describe_call(node, input, config):
        call = _orig_describe(node, input, config)
        err = config.get(CONF, {}).get(CONFIG_KEY_NODE_ERROR)
        if err is not None:
            call["node_error"] = {
                "node": err.node,
                "type_name": qualified_name(type(err.error)),
                "args": [str(a) for a in err.error.args],
            }
        return call

    RN.describe_call = describe_call
    _orig_rebuild = NR._rebuild_config

    def _rebuild_config(call, *a, **kw):
        config = _orig_rebuild(call, *a, **kw)
        if call.get("node_error"):
            e = call["node_error"]
            config[CONF][CONFIG_KEY_NODE_ERROR] = NodeError(
                node=e["node"], error=revive_exception(e["type_name"], e["args"], "")
            )
        return config

    NR._rebuild_config = _rebuild_config


# --- checkpointer: lend the root graph's checkpointer to nodes on the worker -------------
if "checkpointer" in FIXES:
    import nervenet_langgraph.graph as G
    import nervenet_langgraph.node_runner as NR
    from langgraph._internal._constants import CONF, CONFIG_KEY_CHECKPOINTER

    _cp = contextvars.ContextVar("nn_checkpointer", default=None)
    _orig_copy = G._distributed_copy

    def _distributed_copy(compiled, distribution, prefix):
        if prefix == distribution.name:
            distribution.root_checkpointer = compiled.checkpointer
        return _orig_copy(compiled, distribution, prefix)

    G._distributed_copy = _distributed_copy
    _orig_handler = G.Distribution._handler

    def _handler(self, task_type):
        inner = _orig_handler(self, task_type)

        async def handle(payload, ctx):
            cp = getattr(self, "root_checkpointer", None)
            _cp.set(cp if not isinstance(cp, bool) else None)
            return await inner(payload, ctx)

        handle.__name__ = task_type
        return handle

    G.Distribution._handler = _handler
    _orig_rebuild2 = NR._rebuild_config

    def _rebuild_config2(call, *a, **kw):
        config = _orig_rebuild2(call, *a, **kw)
        config[CONF][CONFIG_KEY_CHECKPOINTER] = _cp.get()
        return config

    NR._rebuild_config = _rebuild_config2


# --- copy: keep every attribute of the compiled graph (v2 mappers etc.) ------------------
if "copy" in FIXES:
    import nervenet_langgraph.graph as G

    _orig_copy2 = G._distributed_copy

    def _distributed_copy_keep(compiled, distribution, prefix):
        dg = _orig_copy2(compiled, distribution, prefix)
        for k, v in compiled.__dict__.items():
            if k not in dg.__dict__ and k != "__orig_class__":
                setattr(dg, k, v)
        return dg

    G._distributed_copy = _distributed_copy_keep


# --- tools: relay the `tools` stream mode like `messages` ---------------------------------
if "tools" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN
    from langgraph.pregel._tools import StreamToolCallHandler

    def _tools_handlers(config):
        callbacks = config.get("callbacks")
        handlers = getattr(callbacks, "handlers", callbacks) or []
        return [h for h in handlers if isinstance(h, StreamToolCallHandler)]

    _orig_describe_t = RN.describe_call

    def describe_call_t(node, input, config):
        call = _orig_describe_t(node, input, config)
        hs = _tools_handlers(config)
        call["stream_tools"] = (
            {"subgraphs": hs[0].subgraphs, "parent_ns": hs[0].parent_ns} if hs else None
        )
        return call

    RN.describe_call = describe_call_t
    _orig_rebuild_t = NR._rebuild_config

    def _rebuild_config_t(call, writes, null_resume, resume, relay, store):
        config = _orig_rebuild_t(call, writes, null_resume, resume, relay, store)
        opts = call.get("stream_tools")
        if opts:

            def relay_tool(chunk):
                ns, _, payload = chunk
                relay(("tools", list(ns), payload))

            pns = opts["parent_ns"]
            handler = StreamToolCallHandler(
                relay_tool, opts["subgraphs"], parent_ns=tuple(pns) if pns is not None else None
            )
            config["callbacks"] = [*(config.get("callbacks") or []), handler]
        return config

    NR._rebuild_config = _rebuild_config_t
    _orig_frame_relay = RN.RemoteNode._frame_relay

    def _frame_relay(self, config):
        inner = _orig_frame_relay(self, config)
        serde = self.distribution.serde
        tools = _tools_handlers(config)

        def relay(raw):
            frame = RN.unpack(serde, raw)
            if frame[0] == "tools":
                for h in tools:
                    h.stream((tuple(frame[1]), "tools", frame[2]))
                return
            inner(raw)

        return relay

    RN.RemoteNode._frame_relay = _frame_relay


# --- nestedmsg: ignore handlers inherited from an enclosing worker-side relay -------------
if "nestedmsg" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN

    _orig_mh = RN.messages_handlers

    def messages_handlers(config):
        return [h for h in _orig_mh(config) if not isinstance(h, NR._RelayMessagesHandler)]

    RN.messages_handlers = messages_handlers


# --- nullresume: a peek must not return a null resume some task already consumed ---------
if "nullresume" in FIXES:
    import nervenet_langgraph.remote_node as RN
    from langgraph._internal._constants import CONF, CONFIG_KEY_SCRATCHPAD

    def _cells(fn):
        cells = (c.cell_contents for c in fn.__closure__ or ())
        return dict(zip(fn.__code__.co_freevars, cells, strict=False))

    def peek_null_resume(scratchpad):
        fn = scratchpad.get_null_resume
        try:
            cells = _cells(fn)
            write = cells["null_resume_write"]
            if write is None:
                parent = cells.get("parent_scratchpad")
                return peek_null_resume(parent) if parent is not None else None
            return write[2] if write in cells["pending_writes"] else None
        except (KeyError, AttributeError, ValueError):
            return fn(False)

    _orig_describe_n = RN.describe_call

    def describe_call_n(node, input, config):
        call = _orig_describe_n(node, input, config)
        sp = config.get(CONF, {}).get(CONFIG_KEY_SCRATCHPAD)
        if sp is not None:
            call["null_resume"] = peek_null_resume(sp)
        return call

    RN.describe_call = describe_call_n


# --- stream: relay the parent's CONFIG_KEY_STREAM to graphs run inside a node ------------
if "stream" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN
    from langgraph._internal._constants import CONF, CONFIG_KEY_STREAM
    from langgraph.pregel.protocol import StreamProtocol

    _orig_describe_s = RN.describe_call

    def describe_call_s(node, input, config):
        call = _orig_describe_s(node, input, config)
        stream = config.get(CONF, {}).get(CONFIG_KEY_STREAM)
        call["stream_modes"] = sorted(stream.modes) if stream is not None else None
        return call

    RN.describe_call = describe_call_s
    _orig_rebuild_s = NR._rebuild_config

    def _rebuild_config_s(call, writes, null_resume, resume, relay, store):
        config = _orig_rebuild_s(call, writes, null_resume, resume, relay, store)
        modes = call.get("stream_modes")
        if modes is not None:

            def relay_stream(chunk):
                ns, mode, payload = chunk
                relay(("stream", list(ns), mode, payload))

            config[CONF][CONFIG_KEY_STREAM] = StreamProtocol(relay_stream, set(modes))
        return config

    NR._rebuild_config = _rebuild_config_s
    _orig_frame_relay_s = RN.RemoteNode._frame_relay

    def _frame_relay_s(self, config):
        inner = _orig_frame_relay_s(self, config)
        serde = self.distribution.serde
        stream = config.get(CONF, {}).get(CONFIG_KEY_STREAM)

        def relay(raw):
            frame = RN.unpack(serde, raw)
            if frame[0] == "stream":
                if stream is not None:
                    stream((tuple(frame[1]), frame[2], frame[3]))
                return
            inner(raw)

        return relay

    RN.RemoteNode._frame_relay = _frame_relay_s


# --- call: @task functions called inside a node run inline on the worker -----------------
if "call" in FIXES:
    import nervenet_langgraph.node_runner as NR
    from langgraph._internal._constants import CONF, CONFIG_KEY_CALL
    from langgraph._internal._runnable import is_async_callable

    def _inline_call(
        func, input, *, retry_policy=None, cache_policy=None, callbacks=None, timeout=None, **_
    ):
        args, kwargs = input
        if is_async_callable(func):
            return asyncio.ensure_future(func(*args, **kwargs))
        fut = concurrent.futures.Future()
        try:
            fut.set_result(func(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    _orig_rebuild_c = NR._rebuild_config

    def _rebuild_config_c(*a, **kw):
        config = _orig_rebuild_c(*a, **kw)
        config[CONF][CONFIG_KEY_CALL] = _inline_call
        return config

    NR._rebuild_config = _rebuild_config_c


# --- validation: pydantic ValidationError survives the trip --------------------------------
if "validation" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN
    import nervenet_langgraph.wire as WI
    import pydantic_core

    _orig_args = WI.exception_args

    def exception_args(serde, exc):
        if isinstance(exc, pydantic_core.ValidationError):
            errors = []
            for e in exc.errors(include_url=False):
                d = {"type": e["type"], "loc": list(e["loc"]), "input": e.get("input")}
                if e.get("ctx"):
                    d["ctx"] = {
                        k: (v if isinstance(v, (str, int, float, bool)) else str(v))
                        for k, v in e["ctx"].items()
                    }
                errors.append(d)
            return ["__pydantic_validation_error__", exc.title, errors]
        return _orig_args(serde, exc)

    WI.exception_args = exception_args
    NR.exception_args = exception_args
    _orig_revive = WI.revive_exception

    def revive_exception(type_name, args, tb):
        if args and args[0] == "__pydantic_validation_error__":
            try:
                exc = pydantic_core.ValidationError.from_exception_data(
                    args[1], [{**e, "loc": tuple(e["loc"])} for e in args[2]]
                )
                if tb:
                    exc.add_note(f"Raised on a nervenet worker:\n{tb}")
                return exc
            except Exception:
                pass
        return _orig_revive(type_name, args, tb)

    WI.revive_exception = revive_exception
    RN.revive_exception = revive_exception


# --- draw: get_graph() draws the original compiled graph -----------------------------------
if "draw" in FIXES:
    import nervenet_langgraph.graph as G

    _orig_copy4 = G._distributed_copy

    def _distributed_copy_d(compiled, distribution, prefix):
        dg = _orig_copy4(compiled, distribution, prefix)
        dg._nn_original = compiled
        return dg

    G._distributed_copy = _distributed_copy_d

    def get_graph(self, config=None, *, xray=False):
        return self._nn_original.get_graph(config, xray=xray)

    async def aget_graph(self, config=None, *, xray=False):
        return await self._nn_original.aget_graph(config, xray=xray)

    G.DistributedGraph.get_graph = get_graph
    G.DistributedGraph.aget_graph = aget_graph


# --- runtime: control (drain), server_info and heartbeat reach the worker's Runtime -------
if "runtime" in FIXES:
    import nervenet_langgraph.node_runner as NR
    import nervenet_langgraph.remote_node as RN
    from langgraph._internal._constants import CONF, CONFIG_KEY_RUNTIME
    from langgraph.runtime import RunControl, ServerInfo, _no_op_heartbeat

    _orig_describe_r = RN.describe_call

    def describe_call_r(node, input, config):
        call = _orig_describe_r(node, input, config)
        rt = config.get(CONF, {}).get(CONFIG_KEY_RUNTIME)
        control = getattr(rt, "control", None)
        call["control"] = {"drain_reason": control.drain_reason} if control is not None else None
        si = getattr(rt, "server_info", None)
        call["server_info"] = (
            {"assistant_id": si.assistant_id, "graph_id": si.graph_id} if si is not None else None
        )
        call["heartbeat"] = getattr(rt, "heartbeat", _no_op_heartbeat) is not _no_op_heartbeat
        return call

    RN.describe_call = describe_call_r

    class _RelayedControl(RunControl):
        def __init__(self, relay, reason):
            super().__init__()
            self._drain_reason = reason
            self._relay = relay

        def request_drain(self, reason="shutdown"):
            super().request_drain(reason)
            self._relay(("control", reason))

    _orig_rebuild_r = NR._rebuild_config

    def _rebuild_config_r(call, writes, null_resume, resume, relay, store):
        config = _orig_rebuild_r(call, writes, null_resume, resume, relay, store)
        rt = config[CONF][CONFIG_KEY_RUNTIME]
        patch = {}
        if call.get("control") is not None:
            patch["control"] = _RelayedControl(relay, call["control"]["drain_reason"])
        if call.get("server_info") is not None:
            patch["server_info"] = ServerInfo(**call["server_info"])
        if call.get("heartbeat"):
            patch["heartbeat"] = lambda: relay(("heartbeat",))
        if patch:
            config[CONF][CONFIG_KEY_RUNTIME] = rt.override(**patch)
        return config

    NR._rebuild_config = _rebuild_config_r
    _orig_frame_relay_r = RN.RemoteNode._frame_relay

    def _frame_relay_r(self, config):
        inner = _orig_frame_relay_r(self, config)
        serde = self.distribution.serde
        rt = config.get(CONF, {}).get(CONFIG_KEY_RUNTIME)

        def relay(raw):
            frame = RN.unpack(serde, raw)
            if frame[0] == "control":
                if rt is not None and rt.control is not None:
                    rt.control.request_drain(frame[1])
                return
            if frame[0] == "heartbeat":
                if rt is not None:
                    rt.heartbeat()
                return
            if rt is not None and frame[0] in ("messages", "custom", "tools"):
                rt.heartbeat()  # output from the node is progress (refresh_on="auto")
            inner(raw)

        return relay

    RN.RemoteNode._frame_relay = _frame_relay_r
