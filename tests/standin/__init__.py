"""A local stand-in for Binance's spot REST API (market data and signed trading) and kline
stream, serving real candles.

Driven by the real ccxt client: point `build_exchange("binance", api_url=...)` at it.

In-process (integration tests)::

    with serve_standin(build_market(data_dir)) as standin:   # server.py
        standin.base_url                  # http://127.0.0.1:<free port>
        standin.market.clock.set(ms)      # clock.py: manual, or speed > 0 from wall time
        standin.market.faults.add(RateLimited(count=2, retry_after_s=1, symbol="ETH/BTC"))
        standin.market.open_candle = False
        standin.market.weight.limit = 100 # market.weight: X-MBX-USED-WEIGHT-1M, 429 past it
        standin.market.log.records()      # request_log.py; inside_retry_windows(records)
        standin.market.account.fund(BTC=1.0)    # orders.py: what the signed endpoints trade on
        standin.market.account.orders(client_order_id="cb-...")  # the exchange's own order book
        standin.market.faults.add(OrderTimeout())  # placed and filled, the answer never comes

Signed trading (trading.py, orders.py): build the client with any `api_key=` and `secret=`, and
`options={"fetchMargins": False}` (an authenticated ccxt binance otherwise asks for margin
pairs, which the stand-in does not serve). Market orders fill at once at the close of the
candle the clock is in (`market.last_price`), balances move, a reused client order id is
refused; order faults (faults.py) reject, or lose the answer of an order that WAS placed
(`OrderServerError`, `OrderTimeout`).

As a process (end-to-end tests): `python -m tests.standin --port N --speed X --start-ms M`,
driven through /_standin/ (control.py), e.g. with `run_standin_process()` and its
`StandInControl` client (remote.py).

What is served (series.py): every real file under its real name plus derived symbols, all on
one timeline; endpoints and faults: app.py, market.py, trading.py, orders.py, faults.py;
WebSocket klines: stream.py.
"""
