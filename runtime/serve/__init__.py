"""``stmae-serve``: video object segmentation as a network service.

- :mod:`.config`: :class:`ServeConfig`, the server's limits and security settings (frozen,
  validated).
- :mod:`.hub`: :class:`SessionHub`, the engine owner: sessions and their bounded queues
  (no ASGI import: a Ray Serve replica can hold one); :mod:`.hub_api`: what the web layer
  calls on a hub.
- :mod:`.scheduler`: the hub's scheduler thread, which steps the ready frames of many
  sessions together through one :class:`runtime.engine.stream_engine.StreamEngine`
  (dynamic batching, idle timeout), and the outcomes it hands back.
- :mod:`.codec`: uploaded bytes <-> frames and label maps (the toolkit's readers).
- :mod:`.metrics`: the Prometheus metrics of one server.
- :mod:`.security`: bearer-token checks and the loopback-only rule.
- :mod:`.app`: the FastAPI application, a thin layer over the hub; :mod:`.streams`: its
  WebSockets (a stream's frames and results, a subscriber's newest results).
- :mod:`.server`: uvicorn, run programmatically (startup line, SIGTERM drain).
- :mod:`.client`: the Python client (HTTP and WebSocket).
- :mod:`.remote`: ``stmae-serve client``, a video through a server into a folder of masks.
- :mod:`.sources`: server-side sources (an allowed stream or camera the server reads, feeding
  one session in real time); :mod:`.routes_sources`: their routes.
- :mod:`.limits`: the request-size cap (413); :mod:`.errors`: the refusals.
- :mod:`.cli`: the command line.
"""
