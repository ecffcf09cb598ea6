#!/usr/bin/env bash
# The cluster head's MLflow tracking server, with MLflow's authentication app, run by its pid file.
#
#   cluster/tracking_server.sh secrets DIR   create DIR's credentials once (mode 700 folder, 600 files)
#   cluster/tracking_server.sh start DIR     (re)start the server with DIR's credentials, and its watchdog
#   cluster/tracking_server.sh stop          stop the server, its PostgreSQL and the watchdog, by their pid files
#
# DIR lives on the cluster's shared mount, so that every node reads the same credentials:
#   DIR/mlflow.env         MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (what trials send; sourced by
#                          every node's `ray start`, so trials inherit them as they inherit the tracking URI)
#   DIR/mlflow_server.env  MLFLOW_FLASK_SERVER_SECRET_KEY (the server's own; the head only)
#   DIR/ray_auth_token     Ray's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH on every node)
#   DIR/postgres.env       SNNCONV_POSTGRES_PASSWORD (the head's PostgreSQL: user and database mlflow)
#   DIR/database.env       (yours, optional, mode 600) SNNCONV_MLFLOW_DATABASE_URL=postgresql+psycopg://USER:PASSWORD@
#                          HOST:PORT/DATABASE: a database of yours (e.g. Amazon RDS) as the store; nothing local starts
# Nothing secret is printed or passed on a command line. The watchdog stops the server once the head's
# Ray is gone (`ray stop`, which `ray down` runs on the head), so no server outlives its cluster.
#
# The server's home (SNNCONV_MLFLOW_HOME; the cluster files put it on the shared mount, <mount>/mlflow, so that
# `ray down` keeps every result) holds, in a mode 700 folder:
#   postgres/ (the tracking store: PostgreSQL's data/ and server.log) or mlflow.db (SQLite), artifacts/, auth.db
#   (MLflow's users: SQLite in every case, small and written rarely), auth.ini, server.log, and server.pid,
#   watchdog.pid and postgres.pid ("PID BOOT_ID": a pid file left by another machine or before a reboot is ignored)
# A home kept from an earlier cluster is reused as it is: its runs, artifacts and users; `start` then checks that
# the auth database takes DIR's admin password, and stops with a message when it does not.
#
# The tracking store, SNNCONV_MLFLOW_STORE:
#   postgres (default)  DIR/database.env's database when that file exists, else PostgreSQL on the head (Debian's
#                       `postgresql`: initdb, pg_ctl from PATH or /usr/lib/postgresql/*/bin), its data in
#                       <home>/postgres/data on the shared mount (`ray down` keeps it, the next `ray up` starts it
#                       again), on 127.0.0.1:SNNCONV_POSTGRES_PORT (5432) only, database and user mlflow with
#                       DIR/postgres.env's password (scram-sha-256, no trust). It runs as the user that runs this
#                       script, or as `postgres` when that is root (PostgreSQL refuses root; <home> is then mode
#                       710, group postgres, so that it reaches its folder). `stop` and the watchdog stop it too.
#   sqlite              <home>/mlflow.db, which only this server writes (the trials reach it over HTTP): enough for
#                       about 64 trials logging at once; more lose runs to its lock (docs/reliability.md)
# A home holds one kind of store: `start` refuses a home that holds another kind's (mlflow.db, postgres/, or
# either with database.env) rather than show an empty store: choose that store again, or move it aside.
# Bad settings, and a database that does not answer (scheme, host, port, password, database name), are refused
# before the server starts: one line (the password shown as ***), exit status 2.
# Database stores are sized for SNNCONV_MLFLOW_MAX_TRIALS = T trials logging at once (64) on a head of C CPUs:
#   workers W = min(ceil(T / 16), C), at least 1          `mlflow server --workers W`
#   pool P = ceil(T / W) connections per worker, and P more at a burst:  MLFLOW_SQLALCHEMYSTORE_POOL_SIZE and
#                                                          MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW
#   PostgreSQL's max_connections = W * (2P + 10) + 10     (10 per worker for MLflow's other engines, 10 for checks);
#   a database of yours must take as many (T = 64, C = 8: 4 workers, pool 16 + 16, 178 connections)
# Settings (environment): SNNCONV_MLFLOW_HOME (default ~/mlflow), SNNCONV_MLFLOW_HOST (0.0.0.0: the workers
# reach it on the head's address), SNNCONV_MLFLOW_PORT (5000), SNNCONV_MLFLOW_START_S (180: how long `start`
# waits for the server to answer), SNNCONV_RAY_PORT (6379, the head's GCS port the watchdog watches),
# SNNCONV_WATCH_GRACE_S (300: how long the watchdog waits for that port to open before it gives up and stops
# the server), SNNCONV_MLFLOW_STORE, SNNCONV_POSTGRES_PORT and SNNCONV_MLFLOW_MAX_TRIALS (above). `stop` needs
# the same SNNCONV_MLFLOW_HOME as `start`.
set -euo pipefail

HOME_DIR=${SNNCONV_MLFLOW_HOME:-$HOME/mlflow}
HOST=${SNNCONV_MLFLOW_HOST:-0.0.0.0}
PORT=${SNNCONV_MLFLOW_PORT:-5000}
RAY_PORT=${SNNCONV_RAY_PORT:-6379}
PIDFILE=$HOME_DIR/server.pid
WATCHFILE=$HOME_DIR/watchdog.pid
STORE=${SNNCONV_MLFLOW_STORE:-postgres}
PG_PORT=${SNNCONV_POSTGRES_PORT:-5432}
PG_DIR=$HOME_DIR/postgres
PG_STATE=$HOME_DIR/postgres.pid
MAX_TRIALS=${SNNCONV_MLFLOW_MAX_TRIALS:-64}
PYTHON=${PYTHON:-python3}
# this machine in this boot: a pid means something only where and while it was written
BOOT_ID=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || hostname)

port_open() {  # something listens on 127.0.0.1:$1
  "$PYTHON" -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5).close()" \
    "$1" 2>/dev/null
}

stop_pid() {  # stop the process group whose leader's pid is in file $1, if it still runs on this machine
  local file=$1 pid="" boot=""
  [ -s "$file" ] || return 0
  read -r pid boot < "$file" || true
  # a file from another machine (an earlier head, on the shared mount) or from before a reboot: not ours
  if [ "$boot" = "$BOOT_ID" ] && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

refuse() {  # bad input: one line on stderr, exit status 2
  echo "$*" >&2
  exit 2
}

as_pg() {  # run a command as PostgreSQL's OS user: this one, or `postgres` when this is root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {  # the folder with PostgreSQL's initdb, pg_ctl and postgres: PATH's, else the newest Debian one
  local folder
  for folder in $(command -v pg_ctl | xargs -r dirname) $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    [ -x "$folder/initdb" ] && [ -x "$folder/pg_ctl" ] && [ -x "$folder/postgres" ] && echo "$folder" && return
  done
  return 1
}

stop_postgres() {  # stop the head's PostgreSQL if this machine started it in this boot (postgres.pid)
  local pid="" boot=""
  [ -s "$PG_STATE" ] || return 0
  read -r pid boot < "$PG_STATE" || true
  if [ "$boot" = "$BOOT_ID" ] && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop > /dev/null 2>&1 || kill -INT "$pid" || true
  else  # its server is gone (another head's, before a reboot, or crashed): its lock file is stale
    rm -f "$PG_DIR/data/postmaster.pid"
  fi
  rm -f "$PG_STATE"
}

start_postgres() {  # start the head's PostgreSQL (created the first time, with DIR $1's password), max_connections $2
  local dir=$1 connections=$2 bin status=0
  bin=$(pg_bin) || refuse "no PostgreSQL here (initdb, pg_ctl in PATH or /usr/lib/postgresql/*/bin): install" \
    "Debian's postgresql, or name a database in $dir/database.env, or set SNNCONV_MLFLOW_STORE=sqlite"
  if port_open "$PG_PORT"; then
    echo "port $PG_PORT is taken by a process this script did not start (no pid file of it in $HOME_DIR);" \
      "stop that process or set SNNCONV_POSTGRES_PORT" >&2
    exit 1
  fi
  (umask 077 && mkdir -p "$PG_DIR")
  if [ "$(id -u)" = 0 ]; then  # PostgreSQL runs as postgres: its folder is its own, the home lets it pass (710)
    chown postgres: "$PG_DIR"
    chgrp postgres "$HOME_DIR" && chmod 710 "$HOME_DIR"
    as_pg test -w "$PG_DIR" || refuse "the postgres user cannot reach $PG_DIR (a folder above it is private);" \
      "run this script as the cluster's own user, not root"
  fi
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then  # the first start: user mlflow, DIR's password, database mlflow
    sed -n 's/^SNNCONV_POSTGRES_PASSWORD=//p' "$dir/postgres.env" > "$PG_DIR/initdb.pw"
    [ "$(id -u)" != 0 ] || chown postgres: "$PG_DIR/initdb.pw"
    as_pg "$bin/initdb" -D "$PG_DIR/data" -U mlflow --pwfile="$PG_DIR/initdb.pw" -A scram-sha-256 --no-locale \
      -E UTF8 > "$PG_DIR/initdb.log" 2>&1 || status=$?
    rm -f "$PG_DIR/initdb.pw"
    [ "$status" != 0 ] || echo "CREATE DATABASE mlflow" | as_pg "$bin/postgres" --single -D "$PG_DIR/data" postgres \
      >> "$PG_DIR/initdb.log" 2>&1 || status=$?
    if [ "$status" != 0 ]; then
      echo "could not create PostgreSQL's data in $PG_DIR/data; the end of $PG_DIR/initdb.log:" >&2
      tail -n 20 "$PG_DIR/initdb.log" >&2
      exit 1
    fi
  fi
  # loopback only, TCP only (no socket file on the shared mount)
  if ! as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 120 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=$connections" \
      start > /dev/null 2>&1; then
    echo "PostgreSQL did not start; the end of $PG_DIR/server.log:" >&2
    tail -n 20 "$PG_DIR/server.log" >&2
    exit 1
  fi
  echo "$(head -n 1 "$PG_DIR/data/postmaster.pid") $BOOT_ID" > "$PG_STATE"
}

store_kind() {  # the store DIR $1 and SNNCONV_MLFLOW_STORE choose: postgres (the head's), database (yours) or sqlite
  local dir=$1
  case "$STORE" in
    postgres) if [ -e "$dir/database.env" ]; then echo database; else echo postgres; fi ;;
    sqlite) [ ! -e "$dir/database.env" ] || refuse "SNNCONV_MLFLOW_STORE=sqlite, but $dir/database.env names a" \
              "database: remove one of them"
            echo sqlite ;;
    *) refuse "SNNCONV_MLFLOW_STORE must be postgres (the default) or sqlite, not '$STORE'" ;;
  esac
}

check_kept_store() {  # a home that holds another kind of store than $1 is refused: its runs are never hidden
  local kind=$1 kept=""
  [ "$kind" = sqlite ] || [ ! -s "$HOME_DIR/mlflow.db" ] || kept="$HOME_DIR/mlflow.db (SNNCONV_MLFLOW_STORE=sqlite)"
  [ "$kind" = postgres ] || [ ! -e "$PG_DIR/data" ] || kept="$PG_DIR (the head's PostgreSQL: no database.env)"
  [ -z "$kept" ] || refuse "$HOME_DIR holds the runs of an earlier cluster in $kept, not in the store chosen" \
    "now ($kind): choose that store again, or move it aside to start an empty one (its runs are not copied)"
}

database_url() {  # the store's URL: DIR $1's database.env for kind $2 = database, else the head's PostgreSQL's
  local dir=$1 kind=$2 url password
  if [ "$kind" = database ]; then
    url=$(sed -n 's/^SNNCONV_MLFLOW_DATABASE_URL=//p' "$dir/database.env" | tail -n 1 | tr -d '\r')
    url=${url%\"}
    url=${url#\"}
    [ -n "$url" ] || refuse "$dir/database.env has no line SNNCONV_MLFLOW_DATABASE_URL=postgresql+psycopg://..."
    echo "$url"
  else
    password=$(sed -n 's/^SNNCONV_POSTGRES_PASSWORD=//p' "$dir/postgres.env")
    echo "postgresql+psycopg://mlflow:$password@127.0.0.1:$PG_PORT/mlflow"
  fi
}

check_database() {  # database URL $1 (from $2) answers within 10 s: print it, password hidden; else one line, status 2
  SNNCONV_STORE_URL=$1 SNNCONV_STORE_FROM=$2 "$PYTHON" - <<'PY' || exit 2
import os, re, sys, urllib.parse
import sqlalchemy
url, source = os.environ["SNNCONV_STORE_URL"], os.environ["SNNCONV_STORE_FROM"]
parts = urllib.parse.urlsplit(url)
shown = url.replace(f":{parts.password}@", ":***@", 1) if parts.password else url
hint = "; write postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
if parts.scheme.split("+")[0] not in ("postgresql", "mysql", "mssql"):
    sys.exit(f"the database URL {shown} ({source}): unknown scheme {parts.scheme!r}{hint}")
try:
    timeout = {} if parts.scheme.startswith("mssql") else {"connect_timeout": 10}
    sqlalchemy.create_engine(url, connect_args=timeout, poolclass=sqlalchemy.pool.NullPool).connect().close()
except sqlalchemy.exc.NoSuchModuleError:
    sys.exit(f"the database URL {shown} ({source}): SQLAlchemy has no driver {parts.scheme!r}{hint}")
except Exception as error:  # psycopg: 'connection failed: connection to server at "H", port P failed: FATAL:  <why>'
    reason = (str(getattr(error, "orig", None) or error).strip() or type(error).__name__).splitlines()[0]
    reason = re.sub(r"^.* failed: (FATAL: +)?", "", reason)
    sys.exit(f"cannot connect to the database {shown} ({source}): {reason.replace(parts.password or chr(0), '***')}")
print(shown)
PY
}

sizing() {  # "WORKERS POOL CONNECTIONS" for SNNCONV_MLFLOW_MAX_TRIALS trials at once (the header's formula)
  local cpus workers pool
  cpus=$(nproc 2>/dev/null || echo 1)
  workers=$(( (MAX_TRIALS + 15) / 16 ))
  (( workers <= cpus )) || workers=$cpus
  pool=$(( (MAX_TRIALS + workers - 1) / workers ))
  echo "$workers $pool $(( workers * (2 * pool + 10) + 10 ))"
}

secrets() {
  local dir=$1
  (umask 077 && mkdir -p "$dir")
  chmod 700 "$dir"
  umask 077
  [ -s "$dir/mlflow.env" ] || "$PYTHON" -c 'import secrets
print("MLFLOW_TRACKING_USERNAME=admin")
print("MLFLOW_TRACKING_PASSWORD=" + secrets.token_urlsafe(24))' > "$dir/mlflow.env"
  [ -s "$dir/mlflow_server.env" ] || "$PYTHON" -c 'import secrets
print("MLFLOW_FLASK_SERVER_SECRET_KEY=" + secrets.token_hex(32))' > "$dir/mlflow_server.env"
  [ -s "$dir/ray_auth_token" ] || "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' \
    > "$dir/ray_auth_token"
  [ -s "$dir/postgres.env" ] || "$PYTHON" -c 'import secrets
print("SNNCONV_POSTGRES_PASSWORD=" + secrets.token_urlsafe(24))' > "$dir/postgres.env"
  chmod 600 "$dir/mlflow.env" "$dir/mlflow_server.env" "$dir/ray_auth_token" "$dir/postgres.env"
  [ ! -e "$dir/database.env" ] || chmod 600 "$dir/database.env"
}

start() {
  local dir=$1 kind uri shown="" workers pool connections
  secrets "$dir"
  [[ "$MAX_TRIALS" =~ ^[1-9][0-9]{0,4}$ ]] || refuse "SNNCONV_MLFLOW_MAX_TRIALS must be a number of trials" \
    "(1 or more), not '$MAX_TRIALS'"
  [[ "$PG_PORT" =~ ^[1-9][0-9]{0,4}$ ]] || refuse "SNNCONV_POSTGRES_PORT must be a port number, not '$PG_PORT'"
  kind=$(store_kind "$dir") || exit 2
  check_kept_store "$kind"
  read -r workers pool connections < <(sizing)
  stop_pid "$WATCHFILE"
  stop_pid "$PIDFILE"
  stop_postgres
  if port_open "$PORT"; then
    echo "port $PORT is taken by a process this script did not start (no pid file of it in $HOME_DIR);" \
      "stop that process or set SNNCONV_MLFLOW_PORT" >&2
    exit 1
  fi
  (umask 077 && mkdir -p "$HOME_DIR/artifacts")
  chmod 700 "$HOME_DIR"
  umask 077
  trap 'stop_pid "$PIDFILE"; stop_postgres' EXIT  # a start that fails leaves nothing running
  [ "$kind" != postgres ] || start_postgres "$dir" "$connections"
  if [ "$kind" = sqlite ]; then
    uri="sqlite:///$HOME_DIR/mlflow.db"
  else  # read from private files, passed on in the environment only; refused here when it does not answer
    uri=$(database_url "$dir" "$kind") || exit 2
    if [ "$kind" = database ]; then
      shown=$(check_database "$uri" "$dir/database.env") || exit 2
    else
      shown=$(check_database "$uri" "the head's PostgreSQL in $PG_DIR, its password in $dir/postgres.env") || exit 2
    fi
  fi
  cat > "$HOME_DIR/auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$HOME_DIR/auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
  (
    set -a
    . "$dir/mlflow.env"
    . "$dir/mlflow_server.env"
    set +a
    export MLFLOW_AUTH_CONFIG_PATH=$HOME_DIR/auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD
    export MLFLOW_BACKEND_STORE_URI=$uri  # `mlflow server --backend-store-uri`, off the command line
    unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
    options=()  # SQLite: MLflow's defaults, as before; a database: sized for the trials (the header's formula)
    if [ "$kind" != sqlite ]; then
      export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=$pool MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=$pool
      options=(--workers "$workers")
    fi
    setsid nohup mlflow server --app-name basic-auth "${options[@]}" --artifacts-destination "$HOME_DIR/artifacts" \
      --serve-artifacts --host "$HOST" --port "$PORT" > "$HOME_DIR/server.log" 2>&1 < /dev/null &
    echo "$! $BOOT_ID" > "$PIDFILE"
  )
  local server
  read -r server _ < "$PIDFILE"
  # ready before `ray up` goes on: /health answers (MLflow's auth app takes 10-30 s to start)
  local deadline=$((SECONDS + ${SNNCONV_MLFLOW_START_S:-180}))
  until "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
      "http://127.0.0.1:$PORT/health" 2>/dev/null; do
    if ! kill -0 "$server" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "the tracking server did not start; the end of $HOME_DIR/server.log:" >&2
      tail -n 20 "$HOME_DIR/server.log" >&2
      exit 1
    fi
    sleep 1
  done
  # a home kept from an earlier cluster: its auth database must take DIR's admin password (read from the file
  # in a subshell, never on a command line)
  local code
  code=$(
    set -a
    . "$dir/mlflow.env"
    set +a
    "$PYTHON" - "http://127.0.0.1:$PORT/api/2.0/mlflow/experiments/search?max_results=1" <<'PY'
import base64, os, sys, urllib.error, urllib.request
user, password = os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
basic = base64.b64encode(f"{user}:{password}".encode()).decode()
try:
    with urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Authorization": "Basic " + basic}),
                                timeout=120) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print(0)
PY
  )
  if [ "$code" != 200 ]; then
    stop_pid "$PIDFILE"
    if [ "$code" = 401 ]; then
      echo "the tracking server refused the admin password in $dir/mlflow.env: its users' database" \
        "$HOME_DIR/auth.db, kept from an earlier cluster, has another one. Put back that cluster's secrets" \
        "folder, or delete $HOME_DIR/auth.db (its users and permissions; the runs stay in the store)" >&2
    else
      echo "the tracking server answered HTTP $code to the admin's request; the end of $HOME_DIR/server.log:" >&2
      tail -n 20 "$HOME_DIR/server.log" >&2
    fi
    exit 1
  fi
  setsid nohup "$0" watch > /dev/null 2>&1 < /dev/null &
  echo "$! $BOOT_ID" > "$WATCHFILE"
  trap - EXIT
  if [ "$kind" = sqlite ]; then
    echo "tracking server: pid $server, http://$HOST:$PORT, store and artifacts in $HOME_DIR," \
      "log $HOME_DIR/server.log (credentials in $dir)"
  else
    echo "tracking server: pid $server, http://$HOST:$PORT, store $shown (workers $workers, connections" \
      "$pool + $pool each, $connections in all), artifacts in $HOME_DIR, log $HOME_DIR/server.log" \
      "(credentials in $dir)"
  fi
}


watch() {  # wait for the head's GCS to come up (at most the grace period), then until it goes away
  local deadline=$((SECONDS + ${SNNCONV_WATCH_GRACE_S:-300}))
  until port_open "$RAY_PORT"; do
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 2
  done
  while port_open "$RAY_PORT"; do sleep 5; done
  stop_pid "$PIDFILE"
  stop_postgres
  rm -f "$WATCHFILE"
}

case "${1:-}" in
  secrets) secrets "${2:?usage: $0 secrets DIR}" ;;
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop_pid "$WATCHFILE"; stop_pid "$PIDFILE"; stop_postgres ;;
  watch) watch ;;
  *) echo "usage: $0 secrets DIR | start DIR | stop" >&2; exit 2 ;;
esac
