#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379) and Postgres (127.0.0.1:5432) answer before the tests run.
# Order of attempts: already running; local server packages; Docker compose; else say what is missing.
set -u
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 1; done; return 1; }

if ! redis_up && command -v redis-server >/dev/null; then
  mkdir -p /tmp/candlebus-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/candlebus-redis --logfile /tmp/candlebus-redis/redis.log >/dev/null
  wait_for redis_up
fi
if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for pg_up
fi
if { ! redis_up || ! pg_up; } && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  echo "starting Redis and Postgres with docker compose (test profile)"
  docker compose --profile test up -d redis-test postgres-test
  wait_for redis_up; wait_for pg_up
fi

missing=""
redis_up || missing="$missing Redis on 127.0.0.1:6379;"
pg_up || missing="$missing Postgres on 127.0.0.1:5432 (user postgres, trust auth);"
if [ -n "$missing" ]; then
  echo "cannot run the integration tests: not reachable:$missing" >&2
  echo "install redis-server and postgresql, or Docker (the tests then start them with compose)." >&2
  exit 1
fi
