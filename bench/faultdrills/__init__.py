"""Fault drills: run the real pipeline on recorded data, break it on purpose, compare with a clean run.

``bench/drills.py`` is the command line; the modules here do one job each:

* ``servers``: NATS, Redis and PostgreSQL, from URLs or embedded, with kill/restart/reset;
* ``processes``: the collector and the functions as OS processes, each in its own session;
* ``observe``: consumer lag, JetStream advisories, worker counters while a drill runs;
* ``outcome``: what a run produced (streams, tables) and how it differs from the clean run;
* ``poison``: malformed candle events of several kinds;
* ``catalog``: the drills; ``runner``: one drill from a clean state to its table row;
* ``live``: the live-mode drill against the local Binance server;
* ``report``: the progress lines, the Markdown table and the JSON.
"""
