#!/usr/bin/env bash
# The cluster head's MLflow tracking server, with MLflow's authentication app, run by its pid file.
#
#   cluster/tracking_server.sh secrets DIR   create DIR's credentials once (mode 700 folder, 600 files)
#   cluster/tracking_server.sh start DIR     (re)start the server with DIR's credentials, and its watchdog
#   cluster/tracking_server.sh stop          stop the server and the watchdog, by their pid files
#
# DIR lives on the cluster's shared mount, so that every node reads the same credentials:
#   DIR/mlflow.env         MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (what trials send; sourced by
#                          every node's `ray start`, so trials inherit them as they inherit the tracking URI)
#   DIR/mlflow_server.env  MLFLOW_FLASK_SERVER_SECRET_KEY (the server's own; the head only)
#   DIR/ray_auth_token     Ray's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH on every node)
# Nothing secret is printed or passed on a command line. The watchdog stops the server once the head's
# Ray is gone (`ray stop`, which `ray down` runs on the head), so no server outlives its cluster.
#
# The server's home (SNNCONV_MLFLOW_HOME; the cluster files put it on the shared mount, <mount>/mlflow, so that
# `ray down` keeps every result) holds, in a mode 700 folder:
#   mlflow.db (the SQLite tracking store), artifacts/, auth.db (MLflow's users), auth.ini, server.log,
#   server.pid and watchdog.pid ("PID BOOT_ID": a pid file left by another machine or before a reboot is ignored)
# Only this server writes the store (the trials reach it over HTTP), so SQLite on NFS has one writer. A home
# kept from an earlier cluster is reused as it is: its runs, artifacts and users; `start` then checks that
# the auth database takes DIR's admin password, and stops with a message when it does not.
# Settings (environment): SNNCONV_MLFLOW_HOME (default ~/mlflow), SNNCONV_MLFLOW_HOST (0.0.0.0: the workers
# reach it on the head's address), SNNCONV_MLFLOW_PORT (5000), SNNCONV_MLFLOW_START_S (180: how long `start`
# waits for the server to answer), SNNCONV_RAY_PORT (6379, the head's GCS port the watchdog watches),
# SNNCONV_WATCH_GRACE_S (300: how long the watchdog waits for that port to open before it gives up and stops
# the server). `stop` needs the same SNNCONV_MLFLOW_HOME as `start`.
set -euo pipefail

HOME_DIR=${SNNCONV_MLFLOW_HOME:-$HOME/mlflow}
HOST=${SNNCONV_MLFLOW_HOST:-0.0.0.0}
PORT=${SNNCONV_MLFLOW_PORT:-5000}
RAY_PORT=${SNNCONV_RAY_PORT:-6379}
PIDFILE=$HOME_DIR/server.pid
WATCHFILE=$HOME_DIR/watchdog.pid
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
  chmod 600 "$dir/mlflow.env" "$dir/mlflow_server.env" "$dir/ray_auth_token"
}

start() {
  local dir=$1
  secrets "$dir"
  stop_pid "$WATCHFILE"
  stop_pid "$PIDFILE"
  if port_open "$PORT"; then
    echo "port $PORT is taken by a process this script did not start (no pid file of it in $HOME_DIR);" \
      "stop that process or set SNNCONV_MLFLOW_PORT" >&2
    exit 1
  fi
  (umask 077 && mkdir -p "$HOME_DIR/artifacts")
  chmod 700 "$HOME_DIR"
  umask 077
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
    unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
    setsid nohup mlflow server --app-name basic-auth \
      --backend-store-uri "sqlite:///$HOME_DIR/mlflow.db" --artifacts-destination "$HOME_DIR/artifacts" \
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
        "folder, or delete $HOME_DIR/auth.db (its users and permissions; the runs stay in mlflow.db)" >&2
    else
      echo "the tracking server answered HTTP $code to the admin's request; the end of $HOME_DIR/server.log:" >&2
      tail -n 20 "$HOME_DIR/server.log" >&2
    fi
    exit 1
  fi
  setsid nohup "$0" watch > /dev/null 2>&1 < /dev/null &
  echo "$! $BOOT_ID" > "$WATCHFILE"
  echo "tracking server: pid $server, http://$HOST:$PORT, store and artifacts in $HOME_DIR," \
    "log $HOME_DIR/server.log (credentials in $dir)"
}


watch() {  # wait for the head's GCS to come up (at most the grace period), then until it goes away
  local deadline=$((SECONDS + ${SNNCONV_WATCH_GRACE_S:-300}))
  until port_open "$RAY_PORT"; do
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 2
  done
  while port_open "$RAY_PORT"; do sleep 5; done
  stop_pid "$PIDFILE"
  rm -f "$WATCHFILE"
}

case "${1:-}" in
  secrets) secrets "${2:?usage: $0 secrets DIR}" ;;
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop_pid "$WATCHFILE"; stop_pid "$PIDFILE" ;;
  watch) watch ;;
  *) echo "usage: $0 secrets DIR | start DIR | stop" >&2; exit 2 ;;
esac
